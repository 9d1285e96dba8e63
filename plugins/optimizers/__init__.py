"""Optimizers: ``adamw`` (Loshchilov & Hutter 2019, arXiv:1711.05101), ``sgd`` (momentum,
Nesterov) and ``lion`` (Chen et al. 2023, arXiv:2302.06675).

Each build receives the model and splits its parameters into a decayed group and a
group without weight decay (:func:`corekit.optim.decay_groups`, from the fields of
:class:`corekit.params.OptimizerParams`): by default norms, biases and embeddings are not decayed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, ValidationInfo, field_validator

from corekit import hookimpl
from corekit.params import OptimizerParams

BUILD = "corekit_plugins.optimizers.build:"

#: a decay rate of a moving average: 1 would never forget, negative would oscillate; torch
#: refuses values outside [0, 1) only when the optimizer is built
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class AdamWParams(OptimizerParams):
    """Adam with decoupled weight decay; torch's fused or foreach kernel where available."""

    name: Literal["adamw"] = "adamw"
    betas: tuple[Beta, Beta] = Field((0.9, 0.95), description="moment decay rates, each in [0, 1)")
    eps: PositiveFloat = 1e-8
    fused: bool | None = Field(None, description="fused kernel: None picks it where the device supports it")


class SGDParams(OptimizerParams):
    """Stochastic gradient descent with momentum and optional Nesterov momentum."""

    name: Literal["sgd"] = "sgd"
    lr: PositiveFloat = 0.1
    weight_decay: NonNegativeFloat = 0.0
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="momentum factor, in [0, 1)")
    dampening: float = Field(0.0, ge=0.0, le=1.0, description="dampening of the gradient in the momentum, in [0, 1]")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0 and dampening = 0)")

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, value: bool, info: ValidationInfo) -> bool:
        momentum, dampening = info.data.get("momentum"), info.data.get("dampening")
        if value and momentum is not None and dampening is not None and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"nesterov = true needs momentum > 0 and dampening = 0; here momentum={momentum}, dampening={dampening}"
            )
        return value


class LionParams(OptimizerParams):
    """Lion: the sign of an interpolated momentum, with decoupled weight decay."""

    name: Literal["lion"] = "lion"
    lr: PositiveFloat = 1e-4
    weight_decay: NonNegativeFloat = 1.0
    betas: tuple[Beta, Beta] = Field((0.9, 0.99), description="interpolation and momentum rates, each in [0, 1)")


@hookimpl
def corekit_register_components(registry):
    registry.add("optimizer", AdamWParams, BUILD + "build_adamw")
    registry.add("optimizer", SGDParams, BUILD + "build_sgd")
    registry.add("optimizer", LionParams, BUILD + "build_lion")
