"""Gated linear units: ``act(gate) * value`` over the two halves of the input."""

from __future__ import annotations

import torch
from torch import nn


class Gated(nn.Module):
    """Splits (..., 2H) into gate and value halves and returns act(gate) * value (..., H)."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = x.chunk(2, dim=-1)  # (..., H) each
        return self.act(gate) * value
