"""Validation loss and perplexity of a model on a run's fixed validation windows."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from corekit.data.windows import ShardSet, ValWindows


@torch.no_grad()
def validation_loss(model, data_dir: Path, context_length: int, *, max_windows: int = 64, batch_size: int = 16) -> float:
    """Mean next-token cross-entropy (nats per token) over the val windows of ``data_dir``."""
    windows = ValWindows(ShardSet(data_dir, "val"), context_length, max_windows)
    loader = torch.utils.data.DataLoader(windows, batch_size=batch_size)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for inputs, targets in loader:
            logits = model(inputs)  # (B, T, V)
            total += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum").item()
            count += targets.numel()
    finally:
        model.train(was_training)
    return total / count


def perplexity(loss: float) -> float:
    """exp(loss), or inf when that overflows."""
    return math.exp(loss) if loss < 700 else math.inf
