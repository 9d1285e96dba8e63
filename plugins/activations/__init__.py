"""MLP activations: ``gelu`` (Hendrycks & Gimpel 2016, exact or tanh), ``relu``, ``silu``
(Elfwing et al. 2017) and the gated ``swiglu`` and ``geglu`` (Shazeer 2020,
arXiv:2002.05202)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from corekit import hookimpl
from corekit.params import ActivationParams, ModelContext

Approximate = Literal["none", "tanh"]


class GELUParams(ActivationParams):
    """Gaussian error linear unit, exact (erf) or with the tanh approximation (GPT-2)."""

    name: Literal["gelu"] = "gelu"
    approximate: Approximate = Field("none", description="'none' (exact erf) or 'tanh'")


class ReLUParams(ActivationParams):
    """Rectified linear unit, max(x, 0)."""

    name: Literal["relu"] = "relu"


class SiLUParams(ActivationParams):
    """Sigmoid linear unit (swish), x * sigmoid(x)."""

    name: Literal["silu"] = "silu"


class SwiGLUParams(ActivationParams):
    """Gated: silu(gate) * value (Llama, PaLM)."""

    gated = True
    name: Literal["swiglu"] = "swiglu"


class GEGLUParams(ActivationParams):
    """Gated: gelu(gate) * value."""

    gated = True
    name: Literal["geglu"] = "geglu"
    approximate: Approximate = Field("none", description="'none' (exact erf) or 'tanh'")


def build_gelu(params: GELUParams, ctx: ModelContext):
    from torch import nn

    return nn.GELU(approximate=params.approximate)


def build_relu(params: ReLUParams, ctx: ModelContext):
    from torch import nn

    return nn.ReLU()


def build_silu(params: SiLUParams, ctx: ModelContext):
    from torch import nn

    return nn.SiLU()


def build_swiglu(params: SwiGLUParams, ctx: ModelContext):
    from torch import nn

    from corekit_plugins.activations.gated import Gated

    return Gated(nn.SiLU())


def build_geglu(params: GEGLUParams, ctx: ModelContext):
    from torch import nn

    from corekit_plugins.activations.gated import Gated

    return Gated(nn.GELU(approximate=params.approximate))


@hookimpl
def corekit_register_components(registry):
    registry.add("activation", GELUParams, build_gelu)
    registry.add("activation", ReLUParams, build_relu)
    registry.add("activation", SiLUParams, build_silu)
    registry.add("activation", SwiGLUParams, build_swiglu)
    registry.add("activation", GEGLUParams, build_geglu)
