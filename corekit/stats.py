"""Parameter counts and forward FLOPs per token.

FLOPs follow the matmul count of Hoffmann et al. 2022 (Chinchilla, appendix F): every
linear layer costs ``2 * in * out`` per token, and attention adds ``2 * T * d_attn`` for
the scores and as much again for the weighted sum of values, per layer, where ``T`` is
the sequence length and ``d_attn = n_heads * head_dim``. Embedding lookups, norms,
activations and softmax are not counted. The kernels here compute the dense T x T
scores, so a sliding window does not lower the figure.

:func:`model_size` counts a spec's model without building its ``n_layers`` blocks: it builds
models of one and two blocks on the meta device and scales the difference (one block) by
``n_layers``, in Python integers, so a spec with 10**12 layers is counted at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corekit.errors import CorekitError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from corekit.registry import Registry
    from corekit.spec import ModelSpec


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of distinct parameters (a tied weight counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def linear_flops(model: nn.Module) -> int:
    """Forward FLOPs per token of the model's linear layers (``2 * in * out`` each)."""
    from torch import nn

    return sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))


def attention_flops(spec: ModelSpec, seq_len: int | None = None) -> int:
    """Forward FLOPs per token of the attention scores and weighted values, over all layers."""
    seq = seq_len or spec.context_length
    d_attn = spec.attention.n_heads * spec.context().head_dim
    return spec.n_layers * 4 * seq * d_attn


def flops_per_token(model: nn.Module, spec: ModelSpec, seq_len: int | None = None) -> int:
    """Forward FLOPs per token at sequence length ``seq_len`` (default: the context length)."""
    return linear_flops(model) + attention_flops(spec, seq_len)


@dataclass(frozen=True)
class ModelSize:
    """What :func:`model_size` counts."""

    #: distinct parameters (a tied weight counts once)
    parameters: int
    #: parameters of the token embedding table
    embedding: int
    #: forward FLOPs per token at the context length
    flops_per_token: int


def model_size(spec: ModelSpec, registry: Registry | None = None, *, vocab_size: int | None = None) -> ModelSize:
    """Parameters and forward FLOPs per token of the model ``spec`` describes, without building it.

    Models of one and two blocks are built on the meta device (shapes only); every block
    is alike, so the full model has the one-block model's counts plus ``n_layers - 1``
    times the difference between the two.

    Raises:
        CorekitError: a weight too large for torch to describe even on the meta device
            (over 2**63 bytes), naming the spec fields that make it so.
    """
    import torch

    from corekit.assemble import build_model

    counts = []
    for n_layers in (1, 2) if spec.n_layers > 1 else (1,):
        probe = spec.model_copy(update={"n_layers": n_layers})
        try:
            with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                model = build_model(probe, registry, vocab_size=vocab_size)
        except (RuntimeError, CorekitError) as exc:
            _raise_if_overflow(exc, spec, vocab_size)
            raise
        counts.append((count_parameters(model), linear_flops(model), model.tok_emb.weight.numel()))
    params, linear, embedding = counts[0]
    if len(counts) == 2:
        params += (spec.n_layers - 1) * (counts[1][0] - params)
        linear += (spec.n_layers - 1) * (counts[1][1] - linear)
    return ModelSize(params, embedding, linear + attention_flops(spec))


def _raise_if_overflow(exc: BaseException, spec: ModelSpec, vocab_size: int | None) -> None:
    """Turn torch's "storage size calculation overflowed" into an error naming the spec fields."""
    cause: BaseException | None = exc
    while cause is not None and "overflow" not in str(cause):
        cause = cause.__cause__
    if cause is None:
        return
    match = re.search(r"sizes=\[([\d, ]+)\]", str(cause))
    sizes = [int(s) for s in match.group(1).split(",")] if match else []
    fields = {
        "model.d_model": spec.d_model,
        "model.mlp.hidden_dim": getattr(spec.mlp, "hidden_dim", None),
        "model.vocab_size": vocab_size or spec.vocab_size,
        "model.context_length": spec.context_length,
        "model.attention.head_dim": getattr(spec.attention, "head_dim", None),
    }
    named = {path: value for path, value in fields.items() if value is not None and value in sizes}
    shown = ", ".join(f"{path}={value}" for path, value in (named or fields).items() if value is not None)
    shape = f" of shape {sizes}" if sizes else ""
    raise CorekitError(
        f"{shown}: the model is too large for torch to describe even without memory: a weight{shape} would take "
        "more than 2**63 bytes. Lower " + (" or ".join(named) if named else "these widths") + "."
    ) from exc
