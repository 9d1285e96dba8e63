"""Per-forward attention context: positions, padding and the masks built from them.

Masks are aligned bottom-right: with ``past_len`` cached keys, query ``i`` (of the new
tokens) sees keys up to ``past_len + i``. ``F.scaled_dot_product_attention(is_causal=True)``
aligns top-left, so ``is_causal`` is only offered when there is no past (DESIGN.md, traps).
Masked scores get the dtype's most negative finite value rather than -inf, so a row with
every key masked (a left-padding query) gives a finite result instead of NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from corekit.modules.positional import Positional


@dataclass(frozen=True)
class HeadLayout:
    """How an attention module lays its heads out in its weights, for plugins that act on whole
    heads (structured pruning). An attention module offers it as ``head_layout()``.

    The fused input projection ``qkv`` (a submodule name, relative to the attention module) has
    rows ``[query heads | key heads | value heads]``, ``head_dim`` rows per head; the output
    projection ``out`` has one block of ``head_dim`` input columns per query head, and query head
    ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``.
    """

    n_heads: int
    n_kv_heads: int
    head_dim: int
    qkv: str = "qkv"
    out: str = "out"


class AttnBatch:
    """What every attention layer needs to know about the current forward pass."""

    def __init__(
        self,
        positional: Positional,
        positions: torch.Tensor,
        past_len: int,
        key_padding: torch.Tensor | None,
    ) -> None:
        """
        Args:
            positional: the model's positional scheme.
            positions: (B, T) position of each new token, or (1, T) when all rows share them.
            past_len: number of cached keys before the new tokens.
            key_padding: (B, past_len + T) bool, True for real tokens; None if no padding.
        """
        self.positional = positional
        self.positions = positions
        self.past_len = past_len
        self.q_len = positions.shape[1]
        self.key_padding = key_padding
        self.pos_state: Any = positional.prepare(positions)
        self._bias: dict[tuple[Any, ...], tuple[torch.Tensor | None, bool]] = {}

    def attention_bias(self, window: int | None, dtype: torch.dtype) -> tuple[torch.Tensor | None, bool]:
        """The additive score bias for this forward and whether plain causal masking suffices.

        Returns ``(None, True)`` when a top-left causal mask is exact (no past, no padding,
        no window, no score bias), ``(None, False)`` when nothing needs masking (one new
        token, no padding, no window, no score bias), else ``(bias, False)`` with ``bias``
        of shape (B or 1, H or 1, Tq, Tk).
        """
        key = (window, dtype)
        if key not in self._bias:
            self._bias[key] = self._build(window, dtype)
        return self._bias[key]

    def _build(self, window: int | None, dtype: torch.dtype) -> tuple[torch.Tensor | None, bool]:
        device = self.positions.device
        k_len = self.past_len + self.q_len
        q_index = torch.arange(self.past_len, k_len, device=device)
        k_index = torch.arange(k_len, device=device)
        score_bias = self.positional.score_bias(q_index, k_index)  # (H, Tq, Tk) or None
        if score_bias is None and window is None and self.key_padding is None:
            if self.past_len == 0:
                return None, True
            if self.q_len == 1:
                return None, False
        allowed = k_index[None, :] <= q_index[:, None]  # (Tq, Tk)
        if window is not None:
            allowed = allowed & (k_index[None, :] > q_index[:, None] - window)
        allowed = allowed[None, None]  # (1, 1, Tq, Tk)
        if self.key_padding is not None:
            allowed = allowed & self.key_padding[:, None, None, :]  # (B, 1, Tq, Tk)
        bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
        if score_bias is not None:
            bias = bias + score_bias.to(dtype)[None]  # (B or 1, H, Tq, Tk)
        return bias.masked_fill(~allowed, torch.finfo(dtype).min), False
