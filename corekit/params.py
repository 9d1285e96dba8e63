"""Base classes for component parameters, and the context components are built in.

A component's parameters are a pydantic model derived from :class:`Params`, with a
``name: Literal["..."]`` tag: the one place the component's name is written. A field may
hold another component (an attention's kernel, say): annotate it ``Slot["kind"]`` and
the registry turns it into the union of every component of that kind once plugins load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, Iterator, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)


class Params(BaseModel):
    """Parameters of one component: unknown fields are rejected; values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str

    def check(self, ctx: ModelContext) -> Iterator[tuple[str, str]]:
        """Yield ``(field, message)`` for each rule this component breaks in ``ctx``.

        Called after every field of the model spec validated, for cross-field rules such as
        "rope needs an even head dimension". ``field`` is relative to this component.
        """
        return iter(())

    def complete(self, ctx: ModelContext) -> Params:
        """This component with the defaults that depend on the model's shape filled in (a
        feed-forward block's hidden width, say); called once the model's fields validated.
        The default fills in nothing and returns ``self``."""
        return self


@dataclass(frozen=True)
class SlotMarker:
    """Marks a field whose value is a component of ``kind`` (resolved by the registry)."""

    kind: str


class _RegistryDefault:
    """The default of a ``Slot`` field: the registry's default component of its kind."""

    def __repr__(self) -> str:
        return "REGISTRY_DEFAULT"


#: Use as a Slot field's default: the component named in ``[defaults]`` of registry.toml.
REGISTRY_DEFAULT: Any = _RegistryDefault()


if TYPE_CHECKING:
    _Kind = TypeVar("_Kind")

    class Slot(Generic[_Kind]):
        """What a type checker sees: a component whose fields are not known statically. (The
        kind in ``Slot["norm"]`` reads to it as an undefined type name, so each annotation carries
        ``# type: ignore[name-defined]`` with that reason.)"""

        def __getattr__(self, name: str) -> Any: ...

else:

    class Slot:
        """``Slot["norm"]`` annotates a field holding a component of kind ``norm``.

        In a spec such a field takes a table with a ``name`` (and that component's
        parameters) or just the name as a string; a table without ``name`` means the
        registry's default component of that kind (``[defaults]`` in registry.toml). No
        component name is written in the core.
        """

        def __class_getitem__(cls, kind: str) -> Any:
            return Annotated[Any, SlotMarker(kind)]


class ActivationParams(Params):
    """Base of every activation component."""

    #: a gated activation receives twice the hidden width and returns the hidden width
    gated: ClassVar[bool] = False


class AttentionParams(Params):
    """Base of every attention component: the core reads heads and window from here."""

    n_heads: PositiveInt = Field(description="number of query heads")
    kernel: Slot["attention_kernel"] = Field(  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
        REGISTRY_DEFAULT, description="how scores are computed: math | flash | <plugin>"
    )
    window: PositiveInt | None = Field(
        None, description="sliding-window size: each query sees at most this many keys"
    )
    head_dim: PositiveInt | None = Field(
        None, description="width of each head (default d_model / n_heads; set by structured pruning)"
    )

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads."""
        return self.n_heads


class FeedForwardParams(Params):
    """Base of every feed-forward component: its activation and hidden width."""

    activation: Slot["activation"] = Field(  # type: ignore[name-defined]  # noqa: F821 (names a plugin kind)
        REGISTRY_DEFAULT, description="gelu | relu | silu | swiglu | geglu | <plugin>"
    )
    hidden_dim: PositiveInt | None = Field(
        None, description="hidden width; default 4*d_model, or 8/3*d_model rounded up to 64 for gated activations"
    )

    @property
    def gated(self) -> bool:
        """Whether the activation takes twice the hidden width (a GLU variant)."""
        return bool(getattr(self.activation, "gated", False))

    def complete(self, ctx: ModelContext) -> FeedForwardParams:
        """The hidden width, when left out: ``4 * d_model``, or for a gated activation ``8/3 * d_model``
        rounded up to a multiple of 64, which keeps the parameter count of the 4x plain MLP (Shazeer
        2020, arXiv:2002.05202)."""
        if self.hidden_dim is not None:
            return self
        hidden = 64 * math.ceil(8 * ctx.d_model / 3 / 64) if self.gated else 4 * ctx.d_model
        return self.model_copy(update={"hidden_dim": hidden})


class PositionalParams(Params):
    """Base of every positional scheme."""

    #: the scheme has per-head parameters (ALiBi's slopes): removing heads changes the kept ones
    depends_on_heads: ClassVar[bool] = False


class OptimizerParams(Params):
    """Base of every optimizer: learning rate and which weights decay (read by
    :func:`corekit.optim.decay_groups`)."""

    lr: PositiveFloat = Field(3e-4, description="peak learning rate (schedulers scale it)")
    weight_decay: NonNegativeFloat = Field(0.1, description="weight decay coefficient")
    decay_norms: bool = Field(False, description="also decay norm weights")
    decay_biases: bool = Field(False, description="also decay biases")
    decay_embeddings: bool = Field(False, description="also decay embedding tables")


class StageParams(Params):
    """Base of every stage's registration (kind ``stage``): just its name. What a stage is told
    to do lives in the spec section it owns, not here."""


class HeadParams(Params):
    """Base of every head (kind ``head``): a head replaces the LM head with scores over named
    classes (see :class:`corekit.change.Head`)."""

    labels: list[str] = Field(min_length=1, description="the class names, in output order")
    pooling: Literal["last", "mean"] = Field(
        "last", description="how per-position scores become one row per text: the last real token, or the mean"
    )
    max_length: PositiveInt | None = Field(
        None, description="longest input in tokens (default: the model's context length); longer ones are cut"
    )

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str]) -> list[str]:
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated or any(not label.strip() for label in labels):
            raise ValueError(f"labels must be distinct and non-empty; got {labels}")
        return labels


class TokenizerParams(Params):
    """Base of every tokenizer component."""

    special_tokens: list[str] = Field(
        default_factory=lambda: ["<|endoftext|>"],
        description="special tokens, reserved at fixed ids and never split",
    )
    added_tokens: list[str] = Field(
        default_factory=list,
        description="special tokens added after training (by fine-tuning templates), at the ids after the trained "
                    "vocabulary, in order",
    )

    @field_validator("special_tokens", "added_tokens")
    @classmethod
    def _distinct_non_empty(cls, tokens: list[str]) -> list[str]:
        if any(not t for t in tokens):
            raise ValueError("special tokens must be non-empty strings")
        duplicates = sorted({t for t in tokens if tokens.count(t) > 1})
        if duplicates:
            raise ValueError(f"special tokens must be distinct; repeated: {duplicates}")
        return tokens

    @model_validator(mode="after")
    def _added_are_new(self) -> "TokenizerParams":
        both = sorted(set(self.special_tokens) & set(self.added_tokens))
        if both:
            raise ValueError(f"added_tokens {both} are already special_tokens")
        return self

    def known_size(self) -> int | None:
        """Vocabulary size if it is known before training, else None."""
        return None


@dataclass(frozen=True)
class ModelContext:
    """Model-wide facts handed to every component's ``build`` and ``check``."""

    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    context_length: int
    vocab_size: int | None
    bias: bool
    dropout: float
    layout: str
    #: an explicit head width (``attention.head_dim``); None means ``d_model // n_heads``
    head_size: int | None = None

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.head_size or self.d_model // self.n_heads
