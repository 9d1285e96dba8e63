"""Helpers for optimizer plugins (kind ``optimizer``, built as ``build(params, model)``).

An optimizer plugin's Params derive from :class:`corekit.params.OptimizerParams`, whose fields
say which weights decay; :func:`decay_groups` turns a model and those params into torch
parameter groups, so every optimizer treats norms, biases and embeddings alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from corekit.params import OptimizerParams


def decay_groups(model: nn.Module, params: OptimizerParams) -> list[dict[str, Any]]:
    """``model``'s trainable parameters split into a group with ``weight_decay`` and one without.

    Without decay by default: biases and norm weights (parameters with fewer than two
    dimensions) and embedding tables (``nn.Embedding`` weights, the tied LM head too);
    ``decay_biases``, ``decay_norms`` and ``decay_embeddings`` move them back.
    """
    from torch import nn

    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    bias_ids = {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in embedding_ids:
            wants = params.decay_embeddings
        elif id(p) in bias_ids:
            wants = params.decay_biases
        elif p.ndim < 2:
            wants = params.decay_norms
        else:
            wants = True
        (decay if wants else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": params.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
