"""The dense position-wise feed-forward network, with a plain or gated activation.

Gated activations (GLU variants, Shazeer 2020, arXiv:2002.05202) take an input projection
of twice the hidden width: the first half is the gate, the second the value.
"""

from __future__ import annotations

import torch
from torch import nn

from corekit.modules.mlp import HiddenUnits
from corekit.params import FeedForwardParams, ModelContext


class MLP(nn.Module):
    """``down(act(up(x)))``, where a gated ``act`` halves the width it receives."""

    def __init__(self, d_model: int, hidden_dim: int, activation: nn.Module, gated: bool, bias: bool) -> None:
        super().__init__()
        self.hidden_dim, self.gated = hidden_dim, gated
        self.up = nn.Linear(d_model, hidden_dim * (2 if gated else 1), bias=bias)
        self.act = activation
        self.down = nn.Linear(hidden_dim, d_model, bias=bias)
        self.down.residual_projection = True  # scaled init (GPT-2)

    def hidden_units(self) -> HiddenUnits:
        """Where each hidden unit's weights are: rows of ``up``, columns of ``down``."""
        return HiddenUnits(self.hidden_dim, self.gated, up="up", down="down")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, d_model) -> (B, T, hidden[*2]) -> (B, T, hidden) -> (B, T, d_model)
        return self.down(self.act(self.up(x)))


def build(params: FeedForwardParams, ctx: ModelContext, activation: nn.Module) -> MLP:
    """The dense MLP of ``params.hidden_dim`` units (filled in by ``params.complete``)."""
    return MLP(ctx.d_model, params.hidden_dim, activation, params.gated, ctx.bias)
