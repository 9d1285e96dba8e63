"""An example third-party corekit plugin, installed through the entry-point group ``corekit``.

It adds two components of two kinds:

- norm ``scalenorm``: ScaleNorm (Nguyen & Salazar 2019, "Transformers without Tears",
  arXiv:1910.05895), ``g * x / max(||x||_2, eps)`` with one learned scalar ``g``
  initialised to ``sqrt(d_model)``;
- activation ``squared_relu``: ``relu(x) ** 2`` (So et al. 2021, "Primer",
  arXiv:2109.08668).

This module only defines the Params models and the hook, so listing plugins stays cheap:
torch is imported by the build functions, through :mod:`corekit_example_plugin.modules`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveFloat

from corekit import hookimpl
from corekit.params import ActivationParams, ModelContext, Params

__version__ = "0.1.0"


class ScaleNormParams(Params):
    """ScaleNorm: scale x to unit L2 norm, times one learned scalar g (init sqrt(d_model))."""

    name: Literal["scalenorm"] = "scalenorm"
    eps: PositiveFloat = 1e-5


class SquaredReLUParams(ActivationParams):
    """Squared ReLU, relu(x)**2 (Primer)."""

    name: Literal["squared_relu"] = "squared_relu"


def build_scalenorm(params: ScaleNormParams, ctx: ModelContext):
    from corekit_example_plugin.modules import ScaleNorm

    return ScaleNorm(ctx.d_model, eps=params.eps)


def build_squared_relu(params: SquaredReLUParams, ctx: ModelContext):
    from corekit_example_plugin.modules import SquaredReLU

    return SquaredReLU()


@hookimpl
def corekit_register_components(registry):
    registry.add("norm", ScaleNormParams, build_scalenorm)
    registry.add("activation", SquaredReLUParams, build_squared_relu)
