"""The torch modules of the example plugin (imported only when a component is built)."""

from __future__ import annotations

import math

import torch
from torch import nn


class ScaleNorm(nn.Module):
    """ScaleNorm (Nguyen & Salazar 2019, arXiv:1910.05895): ``g * x / max(||x||_2, eps)``.

    Args:
        d_model: width of the last axis; the scale ``g`` starts at ``sqrt(d_model)``.
        eps: floor of the L2 norm, so an all-zero vector maps to zeros.
    """

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.d_model = d_model
        self.eps = eps
        self.g = nn.Parameter(torch.tensor(math.sqrt(d_model)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., d_model)
        norm = torch.linalg.vector_norm(x, ord=2, dim=-1, keepdim=True).clamp_min(self.eps)  # (..., 1)
        return self.g * x / norm  # (..., d_model)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"


class SquaredReLU(nn.Module):
    """Squared ReLU (So et al. 2021, Primer, arXiv:2109.08668): ``relu(x) ** 2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., hidden)
        return torch.square(torch.relu(x))
