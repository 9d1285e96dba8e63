"""The torch modules behind the ``math`` and ``flash`` attention kernels.

Both take q (B, H, Tq, D), k and v (B, H, Tk, D), an optional additive ``bias``
broadcastable to (B, H, Tq, Tk), and ``is_causal`` (only used with no bias, for Tq == Tk).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from corekit.params import ModelContext, Params


class MathAttention(nn.Module):
    """softmax(QK^T / sqrt(D) + bias) V, op by op: the reference the fast kernels match."""

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, is_causal: bool,
        dropout_p: float,
    ) -> torch.Tensor:
        # q: (B, H, Tq, D); k, v: (B, H, Tk, D)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
        if bias is not None:
            scores = scores + bias
        elif is_causal:
            tq, tk = scores.shape[-2:]
            causal = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
        weights = F.dropout(scores.softmax(dim=-1), p=dropout_p, training=dropout_p > 0)
        return weights @ v  # (B, H, Tq, D)


class FlashAttention(nn.Module):
    """``F.scaled_dot_product_attention``, which dispatches to the fastest backend."""

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, is_causal: bool,
        dropout_p: float,
    ) -> torch.Tensor:
        # q: (B, H, Tq, D); k, v: (B, H, Tk, D) -> (B, H, Tq, D)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=dropout_p, is_causal=is_causal and bias is None
        )


def build_math(params: Params, ctx: ModelContext) -> MathAttention:
    """The ``math`` kernel."""
    return MathAttention()


def build_flash(params: Params, ctx: ModelContext) -> FlashAttention:
    """The ``flash`` kernel."""
    return FlashAttention()
