"""Parameter counts and forward FLOPs per token.

FLOPs follow the matmul count of Hoffmann et al. 2022 (Chinchilla, appendix F): every
linear layer costs ``2 * in * out`` per token, and attention adds ``2 * T * d_attn`` for
the scores and as much again for the weighted sum of values, per layer, where ``T`` is
the sequence length and ``d_attn = n_heads * head_dim``. Embedding lookups, norms,
activations and softmax are not counted. The kernels here compute the dense T x T
scores, so a sliding window does not lower the figure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from corekit.spec import ModelSpec


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of distinct parameters (a tied weight counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops_per_token(model: nn.Module, spec: ModelSpec, seq_len: int | None = None) -> int:
    """Forward FLOPs per token at sequence length ``seq_len`` (default: the context length)."""
    from torch import nn

    seq = seq_len or spec.context_length
    linear = sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    d_attn = spec.attention.n_heads * spec.context().head_dim
    return linear + spec.n_layers * 4 * seq * d_attn
