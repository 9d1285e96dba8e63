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


class MixtureOfExperts(nn.Module):
    """Top-k routed experts (Shazeer et al. 2017, arXiv:1701.06538).

    Each token's router logits pick its ``top_k`` experts; their outputs are mixed with the
    softmax of those logits alone. Every expert runs on every token and the unchosen ones get
    weight 0: simple, exportable to ONNX, and fine for small models (a large one would dispatch
    tokens to experts instead).

    Args:
        d_model: width of the residual stream.
        hidden_dim: hidden width of each expert.
        n_experts: number of experts.
        top_k: experts each token is sent to.
        activation: the built activation module (shared: activations hold no weights).
        gated: whether ``activation`` takes twice the hidden width (SwiGLU, say).
        bias: biases in the linear layers.
    """

    def __init__(self, d_model: int, hidden_dim: int, n_experts: int, top_k: int, activation: nn.Module,
                 *, gated: bool = False, bias: bool = False) -> None:
        super().__init__()
        self.top_k = top_k
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.up = nn.ModuleList(
            nn.Linear(d_model, hidden_dim * (2 if gated else 1), bias=bias) for _ in range(n_experts)
        )
        self.down = nn.ModuleList(nn.Linear(hidden_dim, d_model, bias=bias) for _ in range(n_experts))
        for down in self.down:
            down.residual_projection = True  # corekit's scaled init of projections into the residual stream
        self.act = activation

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """Each token's weight on each expert, (B, T, n_experts); zero outside its top_k."""
        logits = self.router(x)  # (B, T, E)
        top, index = logits.topk(self.top_k, dim=-1)  # (B, T, k)
        return torch.zeros_like(logits).scatter(-1, index, torch.softmax(top, dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.gates(x)  # (B, T, E)
        outs = torch.stack([down(self.act(up(x))) for up, down in zip(self.up, self.down)], dim=-1)  # (B, T, d, E)
        return (outs * gates.unsqueeze(-2)).sum(-1)  # (B, T, d)
