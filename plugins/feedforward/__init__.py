"""Feed-forward blocks: ``mlp``, the dense two-layer MLP of GPT-2 (plain activation) and Llama
(gated, SwiGLU; Shazeer 2020, arXiv:2002.05202)."""

from __future__ import annotations

from typing import Literal

from corekit import hookimpl
from corekit.params import FeedForwardParams


class MLPParams(FeedForwardParams):
    """The dense MLP: up-projection, activation, down-projection."""

    name: Literal["mlp"] = "mlp"


@hookimpl
def corekit_register_components(registry):
    registry.add("feedforward", MLPParams, "corekit_plugins.feedforward.dense:build")
