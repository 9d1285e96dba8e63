"""Grouped-query self-attention, the module behind ``mha``, ``gqa`` and ``mqa``.

Key/value heads are expanded to the query heads with ``repeat_interleave`` rather than
``scaled_dot_product_attention(enable_gqa=True)``, which does not export to ONNX.
"""

from __future__ import annotations

import torch
from torch import nn

from corekit.modules.attention import AttnBatch, HeadLayout
from corekit.modules.kv_cache import LayerCache
from corekit.params import AttentionParams, ModelContext


class GroupedQueryAttention(nn.Module):
    """Self-attention with ``n_heads`` query heads sharing ``n_kv_heads`` key/value heads."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int,
        kernel: nn.Module,
        *,
        bias: bool = False,
        dropout: float = 0.0,
        window: int | None = None,
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        if (head_dim is None and d_model % n_heads) or n_heads % n_kv_heads:
            raise ValueError(f"need d_model % n_heads == 0 (or a head_dim) and n_heads % n_kv_heads == 0, "
                             f"got {d_model}, {n_heads}, {n_kv_heads}")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = head_dim or d_model // n_heads
        self.window = window
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=bias)
        self.out = nn.Linear(n_heads * self.head_dim, d_model, bias=bias)
        self.out.residual_projection = True
        self.kernel = kernel

    def head_layout(self) -> HeadLayout:
        """Where each head's weights are: rows of the fused ``qkv``, columns of ``out``."""
        return HeadLayout(self.n_heads, self.n_kv_heads, self.head_dim, qkv="qkv", out="out")

    def forward(self, x: torch.Tensor, batch: AttnBatch, cache: LayerCache | None = None) -> torch.Tensor:
        bsz, seq, _ = x.shape
        d, h, hkv = self.head_dim, self.n_heads, self.n_kv_heads
        q, k, v = self.qkv(x).split([h * d, hkv * d, hkv * d], dim=-1)
        q = q.view(bsz, seq, h, d).transpose(1, 2)  # (B, H, T, D)
        k = k.view(bsz, seq, hkv, d).transpose(1, 2)  # (B, H_kv, T, D)
        v = v.view(bsz, seq, hkv, d).transpose(1, 2)
        q, k = batch.positional.rotate(q, k, batch.pos_state)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H_kv, T_past + T, D)
        if hkv != h:
            k = k.repeat_interleave(h // hkv, dim=1)  # (B, H, Tk, D)
            v = v.repeat_interleave(h // hkv, dim=1)
        bias, is_causal = batch.attention_bias(self.window, q.dtype)
        y = self.kernel(q, k, v, bias, is_causal, self.dropout if self.training else 0.0)  # (B, H, T, D)
        return self.out(y.transpose(1, 2).reshape(bsz, seq, h * d))


def build(params: AttentionParams, ctx: ModelContext, kernel: nn.Module) -> GroupedQueryAttention:
    """Build the attention module for ``mha``, ``gqa`` or ``mqa`` params."""
    return GroupedQueryAttention(
        ctx.d_model, params.n_heads, params.kv_heads, kernel,
        bias=ctx.bias, dropout=ctx.dropout, window=params.window, head_dim=ctx.head_dim,
    )
