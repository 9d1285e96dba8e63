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
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping

from pydantic import (
    BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator,
)
from pydantic_core import PydanticCustomError

from corekit.errors import CorekitError, SpecError, SpecIssue
from corekit.params import REGISTRY_DEFAULT, ModelContext, Params, Slot, SlotMarker
from corekit.registry import Registry

SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)

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
    attention: Slot["attention"] = Field(  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
        description="mha | gqa | mqa | <plugin>"
    )
    norm: Slot["norm"] = Field(  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
        REGISTRY_DEFAULT, description="layernorm | rmsnorm | <plugin>"
    )
    mlp: Slot["feedforward"] = Field(  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
        REGISTRY_DEFAULT,
        description="the feed-forward block: mlp | <plugin> (a table without name is the default, mlp)",
    )
    position: Slot["positional"] = Field(  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
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
                [("attention.n_heads", f"n_heads={n_heads} must divide d_model={self.d_model} "
                                        "(or set attention.head_dim); "
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


class _OneKind(BaseModel):
    """A table whose fields are kinds, exactly one of which is given."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False,
                              json_schema_extra={"minProperties": 1, "maxProperties": 1})

    @model_validator(mode="after")
    def _one_kind(self) -> _OneKind:
        kinds = list(type(self).model_fields)
        given = [kind for kind in kinds if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"a change names exactly one of {', '.join(kinds)}; got "
                             f"{', '.join(given) if given else 'none'}")
        return self


def _change_model() -> type[BaseModel]:
    """The model of one ``changes`` entry: a table with one key per change kind (see
    :mod:`corekit.change`), exactly one of which is given."""
    from pydantic import create_model

    from corekit.kinds import CHANGE_KINDS

    described = Field(None, description="its name and parameters, as the stage that made the change wrote them")
    fields: dict[str, Any] = {
        kind: (Slot[kind] | None, described)  # type: ignore[valid-type]  # a kind named at run time
        for kind in CHANGE_KINDS
    }
    return create_model(
        "Change", __base__=_OneKind, __module__=__name__,
        __doc__="One entry of a run spec's ``changes``: the component that changed the model, under its kind.",
        **fields,
    )


#: one entry of ``changes`` (a pydantic model; see :func:`_change_model`)
Change = _change_model()


def change_kind(change: Any) -> tuple[str, Params]:
    """``(kind, params)`` of one validated ``changes`` entry."""
    from corekit.kinds import CHANGE_KINDS

    return next((kind, getattr(change, kind)) for kind in CHANGE_KINDS if getattr(change, kind) is not None)


class RunSpec(BaseModel):
    """A whole run: the model, plus one section for each registered stage (tokenizer, data,
    train, compress, export, finetune, and any a plugin adds).

    This class holds what belongs to no stage; :func:`run_spec_type` adds the stages' sections.
    Annotate with it; validate with ``run_spec_type(registry)`` (or :func:`load_spec`).
    """

    model_config = SECTION
    model: ModelSpec
    changes: list[Change] = Field(  # type: ignore[valid-type]  # built from the kinds table
        default_factory=list,
        description="written by the stages that change a trained model (corekit compress, corekit finetune): what "
                    "the run's model is beyond [model], in order, e.g. {compressor = {name = 'quantize'}}, "
                    "{head = {name = 'classifier', labels = [...]}}, {adapter = {name = 'lora'}}",
    )

    def change_params(self, kind: str | None = None) -> list[Params]:
        """The parameters of the ``changes`` entries (of ``kind`` only, if given), in order."""
        pairs = [change_kind(c) for c in self.changes]
        return [params for k, params in pairs if kind is None or k == kind]

    if TYPE_CHECKING:  # the stages' sections (spec.train, spec.data, ...) are added at run time
        def __getattr__(self, name: str) -> Any: ...

    @model_validator(mode="after")
    def _vocab(self) -> RunSpec:
        tokenizer = getattr(self, "tokenizer", None)
        known = getattr(tokenizer, "known_size", None)
        size = known() if callable(known) else None
        if size is None:
            return self
        size += len(getattr(tokenizer, "added_tokens", ()))
        if self.model.vocab_size is None:
            self.model.vocab_size = padded_vocab(size, self.model.pad_vocab_multiple)
        elif self.model.vocab_size < size:
            raise cross_field_error(
                [("model.vocab_size", f"vocab_size={self.model.vocab_size} is smaller than the tokenizer's {size} ids")]
            )
        return self


def run_spec_type(registry: Registry, *, resolved: bool = True) -> type[RunSpec]:
    """The run spec model for ``registry``: :class:`RunSpec` with each registered stage's section,
    in run order, and every component slot resolved to the loaded plugins (``resolved=False``:
    the slots left as ``Slot[kind]`` markers)."""
    from pydantic import create_model

    from corekit.stage import stages

    key = "run_spec" if resolved else "run_spec_static"
    cached = registry.cached(key)
    if cached is not None:
        return cached
    fields: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for stage in stages(registry):
        if stage.section is None:
            continue
        if stage.section in RunSpec.model_fields or stage.section in fields:
            owner = owners.get(stage.section, "the core")
            raise CorekitError(f"stages {owner!r} and {stage.name!r} both claim the spec section [{stage.section}]; "
                               "disable one in a registry.toml (disable = [\"stage:NAME\"])")
        fields[stage.section] = stage.section_field()
        owners[stage.section] = stage.name
    model = create_model("RunSpec", __base__=RunSpec, __module__=__name__, __doc__=RunSpec.__doc__, **fields)
    registry.cache("run_spec_static", model)
    return registry.cache("run_spec", registry.resolve(model)) if resolved else model


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
        problem = f"file {path} does not exist" if not path.exists() else f"{path} is not a file"
        raise SpecError([SpecIssue("", problem)], str(path))
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
    data = upgrade_spec(apply_overrides(data, overrides), registry)
    try:
        return run_spec_type(registry).model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_errors(exc, data, registry), label) from None


def upgrade_spec(data: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """A spec written by an earlier corekit (a run directory's ``spec.toml``), rewritten into
    the current form by each stage's :meth:`corekit.stage.Stage.upgrade`; a current spec is
    returned as it is."""
    from corekit.stage import stages

    for stage in stages(registry):
        data = stage.upgrade(data)
    return data


def spec_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of a run spec with every loaded plugin's parameters."""
    from pydantic.errors import PydanticInvalidForJsonSchema

    try:
        schema = run_spec_type(registry).model_json_schema()
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
    cls: type[BaseModel] = run_spec_type(registry, resolved=False)
    node = data
    for part in loc:
        if isinstance(part, int):  # an item of a list: the list's item model applies
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        info = cls.model_fields.get(part)
        if info is None:
            return []
        node = node.get(part) if isinstance(node, dict) else None
        marker = next((m for m in info.metadata if isinstance(m, SlotMarker)), None)
        if marker is not None:
            name = node if isinstance(node, str) else (node or {}).get("name", registry.defaults.get(marker.kind))
            if not isinstance(name, str) or (marker.kind, name) not in registry:
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
    lists of compressors and changes, so that a spec file may still add ``[compress]`` tables)."""
    data = spec.model_dump(mode="json", exclude_none=True)
    for key in ("compress", "changes"):
        if data.get(key) == []:
            del data[key]
    return data


def with_changes(spec: RunSpec, registry: Registry, *entries: tuple[str, Params]) -> RunSpec:
    """``spec`` with ``entries`` (``(kind, params)`` pairs) added at the end of its ``changes``,
    validated again."""
    data = spec_to_dict(spec)
    data["changes"] = [*data.get("changes", []), *({kind: spec_to_dict(params)} for kind, params in entries)]
    return run_spec_type(registry).model_validate(data)


def spec_to_toml(spec: BaseModel) -> str:
    """The resolved spec as TOML text."""
    import tomli_w

    return tomli_w.dumps(spec_to_dict(spec))
