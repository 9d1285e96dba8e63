"""Run specs: pydantic models for a TOML/JSON spec file, its loading and its errors.

The static models here mark component fields with ``Slot["kind"]``; the registry turns
them into unions of the loaded plugins (:meth:`corekit.registry.Registry.resolve`), so
``load_spec`` validates every component with its own plugin's Params model. Errors
name the field path, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Mapping

from pydantic import (
    AfterValidator, BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator, model_validator,
)
from pydantic_core import PydanticCustomError

from corekit.errors import CorekitError, SpecError, SpecIssue
from corekit.finetune.spec import FinetuneSpec
from corekit.params import REGISTRY_DEFAULT, ModelContext, Params, Slot, SlotMarker
from corekit.registry import Registry, unknown_message

SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)

#: Lightning's registered strategy names (``StrategyRegistry.available_strategies()`` of
#: lightning 2.6), written out so that loading a spec does not import Lightning (~6 s);
#: tests/test_spec_strict.py compares it with the installed Lightning's registry.
LIGHTNING_STRATEGIES: tuple[str, ...] = (
    "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook",
    "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true",
    "ddp_spawn_find_unused_parameters_false", "ddp_spawn_find_unused_parameters_true",
    "ddp_fork_find_unused_parameters_false", "ddp_fork_find_unused_parameters_true",
    "ddp_notebook_find_unused_parameters_false", "ddp_notebook_find_unused_parameters_true",
    "deepspeed", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload", "deepspeed_stage_3",
    "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme",
    "fsdp", "fsdp_cpu_offload", "single_device", "single_xla", "xla_debug", "xla", "single_tpu",
)
#: what ``train.strategy`` accepts
STRATEGIES: tuple[str, ...] = ("auto", *LIGHTNING_STRATEGIES)
#: seeds Lightning's ``seed_everything`` (and numpy) accept
MAX_SEED = 2**32 - 1
#: the deepest nesting of tables and arrays a spec may have (real specs stay under 6); deeper
#: data would exhaust Python's recursion limit in the TOML parser or the validator
MAX_SPEC_DEPTH = 64


def cross_field_error(issues: list[tuple[str, str]]) -> PydanticCustomError:
    """One validation error carrying several ``(relative path, message)`` problems."""
    return PydanticCustomError(
        "cross_field", "{summary}", {"summary": "; ".join(f"{p}: {m}" for p, m in issues), "issues": issues}
    )


class ModelSpec(BaseModel):
    """The ``[model]`` section: shape, layout and components of the decoder."""

    model_config = SECTION
    context_length: PositiveInt = Field(256, description="longest sequence the model sees")
    d_model: PositiveInt = Field(256, description="width of the residual stream")
    n_layers: PositiveInt = Field(4, description="number of blocks")
    vocab_size: PositiveInt | None = Field(None, description="defaults to the tokenizer's size")
    layout: Literal["pre", "post", "parallel"] = Field("pre", description="where the norms sit in a block")
    pad_vocab_multiple: PositiveInt | None = Field(
        None, description="round the default vocab_size up to a multiple of this (e.g. 64, for speed)"
    )
    tie_embeddings: bool = Field(True, description="share the token embedding with the LM head")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on embeddings, residuals and attention")
    bias: bool = Field(False, description="biases in linear layers (and layer norms)")
    init_std: PositiveFloat = Field(0.02, description="std of the normal initialisation")
    attention: Slot["attention"] = Field(description="mha | gqa | mqa | <plugin>")  # type: ignore[valid-type]
    norm: Slot["norm"] = Field(REGISTRY_DEFAULT, description="layernorm | rmsnorm | <plugin>")  # type: ignore[valid-type]
    mlp: Slot["feedforward"] = Field(  # type: ignore[valid-type]  # Slot[...] is an Annotated alias, not a class
        REGISTRY_DEFAULT, description="the feed-forward block: mlp | <plugin> (a table without name is the default, mlp)"
    )
    position: Slot["positional"] = Field(  # type: ignore[valid-type]
        REGISTRY_DEFAULT, description="learned | sinusoidal | rope | alibi | none | <plugin>"
    )

    @model_validator(mode="after")
    def _cross_field(self) -> ModelSpec:
        if not isinstance(self.attention, Params):  # no attention plugins loaded
            return self
        n_heads = self.attention.n_heads
        if self.d_model % n_heads and getattr(self.attention, "head_dim", None) is None:
            divisors = [h for h in range(1, min(self.d_model, 64) + 1) if self.d_model % h == 0]
            raise cross_field_error(
                [("attention.n_heads", f"n_heads={n_heads} must divide d_model={self.d_model} (or set attention.head_dim); "
                                        f"e.g. {divisors}")]
            )
        ctx = self.context()
        issues: list[tuple[str, str]] = []
        parts = {
            "attention": self.attention,
            "attention.kernel": self.attention.kernel,
            "norm": self.norm,
            "mlp": self.mlp,
            "mlp.activation": getattr(self.mlp, "activation", None),
            "position": self.position,
        }
        for prefix, params in parts.items():
            if isinstance(params, Params):
                issues += [(f"{prefix}.{field}", msg) for field, msg in params.check(ctx)]
        if issues:
            raise cross_field_error(issues)
        # each part fills in what depends on the model's shape (the feed-forward hidden width)
        for field in ("attention", "norm", "mlp", "position"):
            params = getattr(self, field)
            if isinstance(params, Params):
                setattr(self, field, params.complete(ctx))
        return self

    def context(self, vocab_size: int | None = None) -> ModelContext:
        """The :class:`ModelContext` components of this model are built and checked in."""
        return ModelContext(
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.attention.n_heads,
            n_kv_heads=self.attention.kv_heads,
            context_length=self.context_length,
            vocab_size=vocab_size or self.vocab_size,
            bias=self.bias,
            dropout=self.dropout,
            layout=self.layout,
            head_size=getattr(self.attention, "head_dim", None),
        )


def _non_blank_path(path: str) -> str:
    if not path.strip():  # an empty pattern names the working directory: everything in it
        raise ValueError("an empty or blank path names no file; give a file, a glob or a directory")
    return path


class DataSpec(BaseModel):
    """The ``[data]`` section: where training text comes from, how it is cleaned and sharded."""

    model_config = SECTION
    source: Literal["python-stdlib"] | None = Field(
        "python-stdlib", description="a built-in corpus (the default when no paths are given)"
    )
    paths: list[Annotated[str, AfterValidator(_non_blank_path)]] = Field(
        default_factory=list, description="text files, globs (** allowed), directories, or .jsonl files"
    )
    text_field: str = Field("text", description="the field holding the text in .jsonl files")
    suffixes: list[str] = Field(
        default_factory=list, description="in directories, only files with these suffixes (empty: all)"
    )
    max_document_bytes: PositiveInt = Field(
        1 << 20, description="text files larger than this are streamed and cut into documents at blank lines"
    )
    normalize: bool = Field(True, description="Unicode NFC normalisation")
    dedupe: bool = Field(True, description="drop exact duplicate documents")
    min_chars: int = Field(32, ge=0, description="drop documents shorter than this")
    max_documents: PositiveInt | None = Field(None, description="use only the first N cleaned documents")
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="share of documents held out for validation")
    shard_tokens: PositiveInt = Field(2**24, description="tokens per shard (shards end at document boundaries)")
    workers: PositiveInt | None = Field(None, description="tokenizer processes (default: all cores)")
    val_windows: PositiveInt = Field(64, description="fixed validation windows served to training")

    @model_validator(mode="before")
    @classmethod
    def _paths_replace_default_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("paths") and "source" not in data:
            data = {**data, "source": None}
        return data

    @model_validator(mode="after")
    def _some_text(self) -> DataSpec:
        if self.source is None and not self.paths:
            raise cross_field_error([("source", "no corpus: set source = 'python-stdlib' or give paths")])
        return self


class TrainSpec(BaseModel):
    """The ``[train]`` section: the optimisation run."""

    model_config = SECTION
    max_steps: PositiveInt = Field(1000, description="optimizer steps")
    batch_size: PositiveInt = Field(16, description="sequences per micro-batch (per device)")
    accumulate: PositiveInt = Field(1, description="micro-batches per optimizer step")
    grad_clip: float = Field(1.0, ge=0.0, description="clip the gradient norm to this (0: off)")
    precision: Literal["32", "bf16-mixed", "16-mixed"] = Field("32", description="Lightning precision")
    compile: bool = Field(False, description="torch.compile the model")
    strategy: Literal[STRATEGIES] = Field(  # type: ignore[valid-type]
        "auto", description="Lightning strategy: auto | ddp | fsdp | deepspeed | ..."
    )
    devices: PositiveInt | Literal["auto"] = Field("auto", description="devices per node: a positive number or 'auto'")
    num_nodes: PositiveInt = 1
    seed: int = Field(1337, ge=0, le=MAX_SEED, description="seeds weights, data order and dropout (0 .. 2**32-1)")
    eval_every: PositiveInt = Field(100, description="validate every this many optimizer steps")
    checkpoint_every: PositiveInt = Field(100, description="checkpoint every this many optimizer steps")
    log_every: PositiveInt = Field(10, description="log training metrics every this many steps")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    optimizer: Slot["optimizer"] = REGISTRY_DEFAULT  # type: ignore[valid-type]
    scheduler: Slot["scheduler"] = REGISTRY_DEFAULT  # type: ignore[valid-type]

    @field_validator("strategy", mode="before")
    @classmethod
    def _known_strategy(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in STRATEGIES:
            raise PydanticCustomError(
                "unknown_choice", "{message}", {"message": unknown_message("Lightning strategy", value, list(STRATEGIES))}
            )
        return value

    @field_validator("devices", mode="before")
    @classmethod
    def _positive_or_auto(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        shown = f" (got {value!r})" if isinstance(value, (dict, list)) else ""  # format_errors adds scalars
        raise ValueError(f"devices must be a positive number of devices or 'auto'{shown}")

    @property
    def needs_unfused_optimizer(self) -> bool:
        """Clipping under mixed precision: Lightning clips before the optimizer step, and refuses
        to when a fused optimizer would unscale the gradients inside its own step."""
        return self.precision != "32" and self.grad_clip > 0

    @model_validator(mode="after")
    def _clipping_needs_unfused(self) -> TrainSpec:
        if self.needs_unfused_optimizer and getattr(self.optimizer, "fused", None) is True:
            message = (
                f"a fused optimizer cannot be combined with grad_clip={self.grad_clip} under precision="
                f"{self.precision!r}; leave fused unset (corekit then picks the foreach kernel), or set grad_clip = 0"
            )
            raise cross_field_error([("optimizer.fused", message)])
        return self


class ExportSpec(BaseModel):
    """The ``[export]`` section: what ``corekit export`` writes."""

    model_config = SECTION
    format: Literal["onnx"] = "onnx"
    quantize: Literal["none", "int8"] = Field("none", description="int8: onnxruntime's int8 weight quantization")
    opset: int | None = Field(None, ge=18, description="ONNX opset (default: the exporter's)")


class RunSpec(BaseModel):
    """A whole run: model, tokenizer, data, training, compression and export."""

    model_config = SECTION
    model: ModelSpec
    tokenizer: Slot["tokenizer"] = Field(REGISTRY_DEFAULT, description="bytes | bpe | char | <plugin>")  # type: ignore[valid-type]
    data: DataSpec = Field(default_factory=DataSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    export: ExportSpec | None = None
    compress: list[Slot["compressor"]] = Field(  # type: ignore[valid-type]
        default_factory=list,
        description="compressors `corekit run` applies after training, in order ([compress] or [[compress]])",
    )
    compressed: list[Slot["compressor"]] = Field(  # type: ignore[valid-type]
        default_factory=list,
        description="written by `corekit compress`: the compressors already applied to this run's weights, in order",
    )
    finetune: FinetuneSpec | None = Field(None, description="fine-tuning of a trained run (corekit finetune)")

    @field_validator("compress", "compressed", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, (dict, str)) else value

    @model_validator(mode="after")
    def _vocab(self) -> RunSpec:
        known = getattr(self.tokenizer, "known_size", None)
        size = known() if callable(known) else None
        if size is None:
            return self
        size += len(getattr(self.tokenizer, "added_tokens", ()))
        if self.model.vocab_size is None:
            self.model.vocab_size = padded_vocab(size, self.model.pad_vocab_multiple)
        elif self.model.vocab_size < size:
            raise cross_field_error(
                [("model.vocab_size", f"vocab_size={self.model.vocab_size} is smaller than the tokenizer's {size} ids")]
            )
        return self


def padded_vocab(size: int, multiple: int | None) -> int:
    """``size`` rounded up to a multiple of ``multiple`` (unchanged when None)."""
    return size if not multiple else multiple * math.ceil(size / multiple)


# --------------------------------------------------------------------------- loading
def nesting_depth(value: Any) -> int:
    """How deeply tables and arrays nest in ``value`` (a scalar is 0, ``{"a": [1]}`` is 2).

    Iterative, so it measures data too deep for the recursive code it protects.
    """
    deepest, stack = 0, [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Iterable[Any] = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_SPEC_DEPTH:  # no need to walk further
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep(what: str) -> str:
    return f"{what} is nested too deeply; a spec may nest tables and arrays at most {MAX_SPEC_DEPTH} levels"


def check_depth(data: Any, source: str | None = None) -> None:
    """A :class:`SpecError` if ``data`` nests deeper than :data:`MAX_SPEC_DEPTH`."""
    if nesting_depth(data) > MAX_SPEC_DEPTH:
        raise SpecError([SpecIssue("", _too_deep(f"the spec {source}" if source else "the spec"))], source)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """Parse a TOML or JSON spec file into a dict (a :class:`SpecError` if unreadable or nested
    more than :data:`MAX_SPEC_DEPTH` levels deep)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError([SpecIssue("", f"file {path} does not exist" if not path.exists() else f"{path} is not a file")], str(path))
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError([SpecIssue("", f"invalid TOML: {exc}")], str(path)) from None
    except json.JSONDecodeError as exc:
        raise SpecError([SpecIssue("", f"invalid JSON: {exc}")], str(path)) from None
    except RecursionError:  # the parsers recurse once per level of nesting
        raise SpecError([SpecIssue("", _too_deep(f"the spec {path}"))], str(path)) from None
    if not isinstance(data, dict):
        raise SpecError([SpecIssue("", "a spec must be a table/object of sections")], str(path))
    check_depth(data, str(path))
    return data


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.field=value`` overrides; values parse as TOML, else as strings."""
    check_depth(data)  # deepcopy recurses too
    data = copy.deepcopy(data)  # TOML values may be dates, which a JSON round-trip cannot copy
    issues = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            issues.append(SpecIssue("--set", f"{item!r} is not of the form section.field=value"))
            continue
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
            too_deep = len(parts) + nesting_depth(value) > MAX_SPEC_DEPTH
        except tomllib.TOMLDecodeError:
            value, too_deep = raw, False
        except RecursionError:
            too_deep = True
        if too_deep:
            shown = item if len(item) <= 60 else f"{item[:40]}...{item[-10:]}"
            issues.append(SpecIssue("--set", _too_deep(f"the value of {shown!r}")))
            continue
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str):  # a component given by name only
                child = {"name": child}
            elif not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    if issues:
        raise SpecError(issues)
    return data


def load_spec(
    source: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    registry: Registry | None = None,
) -> RunSpec:
    """Load and validate a run spec.

    Args:
        source: a ``.toml`` or ``.json`` file, or the spec as a dict.
        overrides: ``section.field=value`` strings applied before validation.
        registry: the plugin registry; defaults to the shared one.

    Raises:
        SpecError: listing every problem with its field path.
    """
    if registry is None:
        from corekit.plugins import get_registry

        registry = get_registry()
    label = None if isinstance(source, Mapping) else str(source)
    if isinstance(source, Mapping):
        check_depth(source)
    data = dict(source) if isinstance(source, Mapping) else read_spec_file(source)
    data = apply_overrides(data, overrides)
    try:
        return registry.resolve(RunSpec).model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_errors(exc, data, registry), label) from None


def spec_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of a run spec with every loaded plugin's parameters."""
    from pydantic.errors import PydanticInvalidForJsonSchema

    try:
        schema = registry.resolve(RunSpec).model_json_schema()
    except PydanticInvalidForJsonSchema as exc:
        for comp in registry.components():
            try:
                comp.params.model_json_schema()
            except PydanticInvalidForJsonSchema:
                raise CorekitError(
                    f"{comp.kind} {comp.name!r} from {comp.source} has parameters JSON Schema cannot express: {exc}"
                ) from None
        raise
    # A table may leave out `name` (the slot's default component) and then matches several
    # members; the loader accepts it, so the schema uses anyOf rather than oneOf.
    schema = _one_of_to_any_of(schema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "corekit run spec"
    return schema


def _one_of_to_any_of(node: Any) -> Any:
    if isinstance(node, dict):
        return {("anyOf" if k == "oneOf" else k): _one_of_to_any_of(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_one_of_to_any_of(v) for v in node]
    return node


# --------------------------------------------------------------------------- errors
def format_errors(exc: ValidationError, data: Any, registry: Registry) -> list[SpecIssue]:
    """Turn pydantic errors into :class:`SpecIssue` s with spec field paths."""
    issues: list[SpecIssue] = []
    for err in exc.errors():
        loc = _spec_loc(err["loc"], data)
        if err["type"] == "cross_field":
            for rel, msg in err["ctx"]["issues"]:
                issues.append(SpecIssue(".".join([*map(str, loc), rel]), msg))
            continue
        if err["type"] in ("unknown_component", "missing_component_name"):
            loc = [*loc, "name"]
        path = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(registry, loc[:-1], data)
            what = "section" if len(loc) == 1 else "field"
            msg = f"unknown {what} {loc[-1]!r}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] in ("model_type", "model_attributes_type", "dict_type"):
            msg = f"expected a table, got {type(err.get('input')).__name__} {err.get('input')!r}"
        elif err["type"] not in ("unknown_component", "missing_component_name", "unknown_choice") and not isinstance(
            err.get("input"), (dict, list)
        ):
            msg += f" (got {err.get('input')!r})"
        issues.append(SpecIssue(path, msg))
    return issues


def _spec_loc(loc: tuple[Any, ...], data: Any) -> list[Any]:
    """``loc`` without the union tags pydantic inserts for discriminated unions."""
    out: list[Any] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, str) and part == node and not last:
            node = {"name": node}
            continue
        if isinstance(node, dict) and part not in node and not last and isinstance(part, str):
            if node.get("name", part) == part:  # the union tag (possibly a default name)
                continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return out


def _allowed_fields(registry: Registry, loc: list[Any], data: Any) -> list[str]:
    """Field names of the model at ``loc`` (for 'unknown field' messages)."""
    cls: type[BaseModel] = RunSpec
    node = data
    for part in loc:
        info = cls.model_fields.get(part) if isinstance(part, str) else None
        if info is None:
            return []
        node = node.get(part) if isinstance(node, dict) else None
        marker = next((m for m in info.metadata if isinstance(m, SlotMarker)), None)
        if marker is not None:
            name = node if isinstance(node, str) else (node or {}).get("name", registry.defaults.get(marker.kind))
            if (marker.kind, name) not in registry:
                return []
            cls = registry.get(marker.kind, name).params
            continue
        candidates = [info.annotation, *getattr(info.annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
        cls = model
    return list(cls.model_fields)


def spec_to_dict(spec: BaseModel) -> dict[str, Any]:
    """The resolved spec as plain data (None values dropped, as TOML has no null; so are empty
    compressor lists, so that a spec file may still add ``[compress]`` tables)."""
    data = spec.model_dump(mode="json", exclude_none=True)
    for key in ("compress", "compressed"):
        if data.get(key) == []:
            del data[key]
    return data


def spec_to_toml(spec: BaseModel) -> str:
    """The resolved spec as TOML text."""
    import tomli_w

    return tomli_w.dumps(spec_to_dict(spec))
