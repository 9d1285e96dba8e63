"""A transformer block in one of three layouts.

- ``pre``: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))`` (GPT-2, Llama; Xiong et al. 2020).
- ``post``: ``norm1(x + attn(x))``, then ``norm2(x + mlp(x))`` (Vaswani et al. 2017).
- ``parallel``: ``x + attn(norm1(x)) + mlp(norm1(x))`` with one shared norm (GPT-J, PaLM).
"""

from __future__ import annotations

import torch
from torch import nn

from corekit.modules.attention import AttnBatch
from corekit.modules.kv_cache import LayerCache

LAYOUTS = ("pre", "post", "parallel")


def norms_per_block(layout: str) -> int:
    """How many norm modules a block of ``layout`` holds."""
    return 1 if layout == "parallel" else 2


class Block(nn.Module):
    """Attention and MLP with residual connections, arranged by ``layout``."""

    def __init__(self, layout: str, attn: nn.Module, mlp: nn.Module, norms: list[nn.Module], dropout: float) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if len(norms) != norms_per_block(layout):
            raise ValueError(f"layout {layout!r} takes {norms_per_block(layout)} norms, got {len(norms)}")
        self.layout = layout
        self.attn = attn
        self.mlp = mlp
        self.norm1 = norms[0]
        self.norm2 = norms[1] if len(norms) > 1 else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, batch: AttnBatch, cache: LayerCache | None = None) -> torch.Tensor:
        # x: (B, T, d_model)
        if self.layout == "pre":
            x = x + self.drop(self.attn(self.norm1(x), batch, cache))
            return x + self.drop(self.mlp(self.norm2(x)))
        if self.layout == "post":
            x = self.norm1(x + self.drop(self.attn(x, batch, cache)))
            return self.norm2(x + self.drop(self.mlp(x)))
        h = self.norm1(x)
        return x + self.drop(self.attn(h, batch, cache)) + self.drop(self.mlp(h))
