"""Validation loss and perplexity of a model on a run's fixed validation windows."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from corekit.data.windows import ShardSet, ValWindows


@torch.no_grad()
def validation_loss(
    model, data_dir: Path, context_length: int, *, max_windows: int = 64, batch_size: int = 16
) -> float:
    """Mean next-token cross-entropy (nats per token) over the val windows of ``data_dir``."""
    windows = ValWindows(ShardSet(data_dir, "val", check_hash=True), context_length, max_windows)
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


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """``(prompt, reference)`` pairs from a JSONL file; errors name the file and line."""
    from corekit.data.sources import iter_jsonl
    from corekit.errors import CorekitError

    if not path.is_file():
        raise CorekitError(f"--data {path} does not exist")
    pairs = []
    for lineno, record in iter_jsonl(path):
        missing = [k for k in ("prompt", "reference")
                   if not isinstance(record, dict) or not isinstance(record.get(k), str)]
        if missing:
            raise CorekitError(f"{path}:{lineno}: needs text fields 'prompt' and 'reference' "
                               f"(missing or not text: {', '.join(missing)})")
        pairs.append((record["prompt"], record["reference"]))
    if not pairs:
        raise CorekitError(f"{path} holds no prompt/reference pairs")
    return pairs


def generation_scores(model, tokenizer, pairs: list[tuple[str, str]], max_new_tokens: int = 64) -> dict[str, float]:
    """Greedy continuations of each prompt scored against its reference: corpus BLEU-4
    (Papineni et al. 2002) and mean ROUGE-L F1 (Lin 2004), both from torchmetrics."""
    from torchmetrics.text import BLEUScore, ROUGEScore

    from corekit.generation import generate

    outputs = generate(model, [p for p, _ in pairs], tokenizer=tokenizer, max_new_tokens=max_new_tokens,
                       temperature=0, stop_tokens=[tokenizer.eot_id])
    references = [r for _, r in pairs]
    bleu = BLEUScore()(outputs, [[r] for r in references]).item()
    rouge = ROUGEScore(rouge_keys=("rougeL",))(outputs, references)["rougeL_fmeasure"].item()
    return {"bleu": bleu, "rougeL": rouge, "outputs": outputs}
