"""Run specs: pydantic models for a TOML/JSON spec file, and its loading.

The static models here mark component fields with ``Slot["kind"]``; the registry turns
them into unions of the loaded plugins (:meth:`corekit.registry.Registry.resolve`), so
``load_spec`` validates every component with its own plugin's Params model. Reading files
and ``--set`` overrides is :mod:`corekit.spec_files`; errors, which name the field path, the
bad value and what is allowed, are :mod:`corekit.spec_errors`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping

from pydantic import (
    BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, model_validator,
)
from pydantic_core import PydanticCustomError

from corekit.errors import CorekitError, SpecError
from corekit.params import REGISTRY_DEFAULT, ModelContext, Params, Slot
from corekit.registry import Registry
from corekit.spec_files import MAX_SPEC_DEPTH as MAX_SPEC_DEPTH
from corekit.spec_files import apply_overrides as apply_overrides
from corekit.spec_files import check_depth as check_depth
from corekit.spec_files import nesting_depth as nesting_depth
from corekit.spec_files import read_spec_file as read_spec_file

SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)



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
        from corekit.spec_errors import format_errors

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
