"""Key/value cache for incremental decoding.

Keys and values are stored per layer with their KV heads (before any expansion to the
query heads), already position-encoded, and grow by concatenation: a plain-torch form
that also exports to ONNX as past/present tensors.
"""

from __future__ import annotations

import torch


class LayerCache:
    """The cached keys and values of one layer."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Number of cached positions."""
        return 0 if self.k is None else self.k.shape[2]

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k, v`` of shape (B, H_kv, T, D); return all keys and values so far."""
        if self.k is not None:
            k = torch.cat([self.k, k], dim=2)  # (B, H_kv, T_past + T, D)
            v = torch.cat([self.v, v], dim=2)
        self.k, self.v = k, v
        return k, v

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows ``rows`` (drop finished sequences)."""
        if self.k is not None:
            self.k, self.v = self.k[rows], self.v[rows]


class KVCache:
    """One :class:`LayerCache` per layer."""

    def __init__(self, n_layers: int) -> None:
        self.layers = [LayerCache() for _ in range(n_layers)]

    @property
    def length(self) -> int:
        """Number of cached positions (the past length of the next forward)."""
        return self.layers[0].length

    def layer(self, index: int) -> LayerCache:
        """The cache of layer ``index``."""
        return self.layers[index]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows ``rows`` in every layer."""
        for layer in self.layers:
            layer.select(rows)
