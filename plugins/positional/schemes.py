"""The torch modules behind the positional plugins (see ``__init__`` for references)."""

from __future__ import annotations

import math

import torch
from torch import nn

from corekit.modules.positional import Positional
from corekit.params import ModelContext


class Learned(Positional):
    """A trainable (context_length, d_model) table added to the token embeddings."""

    def __init__(self, context_length: int, d_model: int) -> None:
        super().__init__()
        self.table = nn.Embedding(context_length, d_model)

    def embed(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table(positions)  # (B, T, d_model)


class Sinusoidal(Positional):
    """PE(p, 2i) = sin(p / base^(2i/d)), PE(p, 2i+1) = cos(p / base^(2i/d))."""

    def __init__(self, d_model: int, base: float) -> None:
        super().__init__()
        self.d_model, self.base = d_model, base

    def embed(self, positions: torch.Tensor) -> torch.Tensor:
        # (B, T, d/2)
        angles = positions[..., None].float() * inverse_frequencies(self.d_model, self.base, positions.device)
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (B, T, d)


def inverse_frequencies(dim: int, base: float, device: torch.device) -> torch.Tensor:
    """base^(-2i/dim) for i < dim/2, in float32 whatever the model's dtype (no buffer that a
    ``model.to(bfloat16)`` could round)."""
    return base ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last axis."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class RoPE(Positional):
    """Rotary embeddings in the half-split layout (GPT-NeoX, Llama)."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta

    def prepare(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (B, T, D/2)
        angles = positions[..., None].float() * inverse_frequencies(self.head_dim, self.theta, positions.device)
        angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, D)
        return angles.cos(), angles.sin()

    def rotate(self, q: torch.Tensor, k: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor]:
        # q: (B, H, T, D), k: (B, H_kv, T, D), cos/sin: (B, 1, T, D) in float32
        cos, sin = state
        q_rot = q * cos.to(q.dtype) + rotate_half(q) * sin.to(q.dtype)
        k_rot = k * cos.to(k.dtype) + rotate_half(k) * sin.to(k.dtype)
        return q_rot, k_rot


def alibi_slopes(n_heads: int) -> list[float]:
    """Head slopes: the geometric sequence 2^(-8/n), 2^(-16/n), ...; for a head count that
    is not a power of two, the closest power's slopes plus every other slope of twice it."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


class ALiBi(Positional):
    """Adds -slope_h * (query index - key index) to the scores of head h."""

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads

    def score_bias(self, q_index: torch.Tensor, k_index: torch.Tensor) -> torch.Tensor:
        slopes = torch.tensor(alibi_slopes(self.n_heads), device=q_index.device)  # (H,), float32
        distance = (k_index[None, :] - q_index[:, None]).float()  # (Tq, Tk), <= 0 where visible
        return slopes[:, None, None] * distance  # (H, Tq, Tk)


def build_learned(params, ctx: ModelContext) -> Learned:
    """The ``learned`` positional scheme for a model of shape ``ctx``."""
    return Learned(ctx.context_length, ctx.d_model)


def build_sinusoidal(params, ctx: ModelContext) -> Sinusoidal:
    """The ``sinusoidal`` positional scheme for a model of shape ``ctx``."""
    return Sinusoidal(ctx.d_model, params.base)


def build_rope(params, ctx: ModelContext) -> RoPE:
    """The ``rope`` positional scheme for a model of shape ``ctx``."""
    return RoPE(ctx.head_dim, params.theta)


def build_alibi(params, ctx: ModelContext) -> ALiBi:
    """The ``alibi`` positional scheme for a model of shape ``ctx``."""
    return ALiBi(ctx.n_heads)


def build_none(params, ctx: ModelContext) -> Positional:
    """No positional information."""
    return Positional()
