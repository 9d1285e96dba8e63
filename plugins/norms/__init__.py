"""Norms: ``layernorm`` (Ba et al. 2016, arXiv:1607.06450) and ``rmsnorm``
(Zhang & Sennrich 2019, arXiv:1910.07467), both torch's own implementations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat

from corekit import hookimpl
from corekit.params import ModelContext, Params


class LayerNormParams(Params):
    """Layer normalisation: subtract the mean, divide by the std, scale and shift."""

    name: Literal["layernorm"] = "layernorm"
    eps: PositiveFloat = 1e-5
    bias: bool | None = Field(None, description="learn a shift; defaults to model.bias")


class RMSNormParams(Params):
    """Root-mean-square normalisation: divide by the RMS and scale (no centring)."""

    name: Literal["rmsnorm"] = "rmsnorm"
    eps: PositiveFloat = 1e-6


def build_layernorm(params: LayerNormParams, ctx: ModelContext):
    from torch import nn

    return nn.LayerNorm(ctx.d_model, eps=params.eps, bias=ctx.bias if params.bias is None else params.bias)


def build_rmsnorm(params: RMSNormParams, ctx: ModelContext):
    from torch import nn

    return nn.RMSNorm(ctx.d_model, eps=params.eps)


@hookimpl
def corekit_register_components(registry):
    registry.add("norm", LayerNormParams, build_layernorm)
    registry.add("norm", RMSNormParams, build_rmsnorm)
