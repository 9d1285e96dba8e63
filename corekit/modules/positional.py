"""The interface of positional schemes.

A scheme can act in three places, and overrides only those it needs:
additive embeddings on the token embeddings (learned, sinusoidal), a rotation of
queries and keys (RoPE), or an additive bias on attention scores (ALiBi).
The decoder calls :meth:`Positional.prepare` once per forward and hands the result
to every layer, so per-position tables are computed once, not once per layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Positional(nn.Module):
    """Base positional scheme: does nothing (no position information, NoPE)."""

    def prepare(self, positions: torch.Tensor) -> Any:
        """Per-forward state computed from ``positions`` (B or 1, T); shared by all layers."""
        return None

    def embed(self, positions: torch.Tensor) -> torch.Tensor | None:
        """Embeddings (B or 1, T, d_model) added to the token embeddings, or None."""
        return None

    def rotate(self, q: torch.Tensor, k: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Position-encode queries (B, H, T, D) and keys (B, H_kv, T, D)."""
        return q, k

    def score_bias(self, q_index: torch.Tensor, k_index: torch.Tensor) -> torch.Tensor | None:
        """Additive score bias (H, Tq, Tk) for query/key sequence indices, or None."""
        return None
