"""Optimizers: ``adamw`` (Loshchilov & Hutter 2019, arXiv:1711.05101), ``sgd`` (momentum,
Nesterov) and ``lion`` (Chen et al. 2023, arXiv:2302.06675).

Each build receives the model and splits its parameters into a decayed group and a
group without weight decay (:func:`corekit_plugins.optimizers.groups.decay_groups`): by
default norms, biases and embeddings are not decayed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat

from corekit import hookimpl
from corekit.params import Params

BUILD = "corekit_plugins.optimizers.build:"


class DecayParams(Params):
    """Fields shared by the optimizers: learning rate and which weights decay."""

    lr: PositiveFloat = Field(3e-4, description="peak learning rate (schedulers scale it)")
    weight_decay: NonNegativeFloat = Field(0.1, description="weight decay coefficient")
    decay_norms: bool = Field(False, description="also decay norm weights")
    decay_biases: bool = Field(False, description="also decay biases")
    decay_embeddings: bool = Field(False, description="also decay embedding tables")


class AdamWParams(DecayParams):
    """Adam with decoupled weight decay; torch's fused or foreach kernel where available."""

    name: Literal["adamw"] = "adamw"
    betas: tuple[float, float] = Field((0.9, 0.95), description="moment decay rates")
    eps: PositiveFloat = 1e-8
    fused: bool | None = Field(None, description="fused kernel: None picks it where the device supports it")


class SGDParams(DecayParams):
    """Stochastic gradient descent with momentum and optional Nesterov momentum."""

    name: Literal["sgd"] = "sgd"
    lr: PositiveFloat = 0.1
    weight_decay: NonNegativeFloat = 0.0
    momentum: NonNegativeFloat = 0.9
    nesterov: bool = False
    dampening: NonNegativeFloat = 0.0


class LionParams(DecayParams):
    """Lion: the sign of an interpolated momentum, with decoupled weight decay."""

    name: Literal["lion"] = "lion"
    lr: PositiveFloat = 1e-4
    weight_decay: NonNegativeFloat = 1.0
    betas: tuple[float, float] = Field((0.9, 0.99), description="interpolation and momentum rates")


@hookimpl
def corekit_register_components(registry):
    registry.add("optimizer", AdamWParams, BUILD + "build_adamw")
    registry.add("optimizer", SGDParams, BUILD + "build_sgd")
    registry.add("optimizer", LionParams, BUILD + "build_lion")
