"""Positional schemes: ``learned`` (GPT-2), ``sinusoidal`` (Vaswani et al. 2017),
``rope`` (Su et al. 2021, arXiv:2104.09864), ``alibi`` (Press et al. 2022,
arXiv:2108.12409) and ``none`` (no positional information; causal masking alone)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PositiveFloat

from corekit import hookimpl
from corekit.params import ModelContext, PositionalParams

BUILD = "corekit_plugins.positional.schemes:"


class LearnedParams(PositionalParams):
    """A learned embedding per position, added to the token embeddings (GPT-2)."""

    name: Literal["learned"] = "learned"


class SinusoidalParams(PositionalParams):
    """Fixed sine/cosine embeddings added to the token embeddings (original transformer)."""

    name: Literal["sinusoidal"] = "sinusoidal"
    base: PositiveFloat = Field(10000.0, description="wavelength base")

    def check(self, ctx: ModelContext):
        if ctx.d_model % 2:
            yield "name", f"sinusoidal embeddings need an even d_model, got d_model={ctx.d_model}"


class RoPEParams(PositionalParams):
    """Rotary embeddings: rotate query/key pairs by a position-dependent angle (Llama)."""

    name: Literal["rope"] = "rope"
    theta: PositiveFloat = Field(10000.0, description="rotation base; larger means longer wavelengths")

    def check(self, ctx: ModelContext):
        if ctx.head_dim % 2:
            yield "name", (
                f"rope needs an even head dim, got head_dim={ctx.head_dim} "
                f"(d_model={ctx.d_model} / n_heads={ctx.n_heads}); change d_model or n_heads"
            )


class ALiBiParams(PositionalParams):
    """Attention with linear biases: a per-head penalty proportional to distance."""

    name: Literal["alibi"] = "alibi"
    #: one slope per head: removing heads would change the slopes of the heads kept
    depends_on_heads: ClassVar[bool] = True


class NoPositionParams(PositionalParams):
    """No positional information (NoPE): the causal mask alone orders the tokens."""

    name: Literal["none"] = "none"


@hookimpl
def corekit_register_components(registry):
    registry.add("positional", LearnedParams, BUILD + "build_learned")
    registry.add("positional", SinusoidalParams, BUILD + "build_sinusoidal")
    registry.add("positional", RoPEParams, BUILD + "build_rope")
    registry.add("positional", ALiBiParams, BUILD + "build_alibi")
    registry.add("positional", NoPositionParams, BUILD + "build_none")
