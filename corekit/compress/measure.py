"""Before/after figures for ``compress-report.json``: size, quality and CPU decode speed."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Weights the model holds (a shared tensor once; a quantized layer counts its weights),
    and how many of them are non-zero."""
    from corekit.modules.quantized import quantized_modules

    total = nonzero = 0
    for p in model.parameters():  # parameters() lists a shared tensor once
        total += p.numel()
        nonzero += int(torch.count_nonzero(p))
    for module in quantized_modules(model).values():
        total += module.in_features * module.out_features
        nonzero += int(torch.count_nonzero(module.integers()))
    return {"parameters": total, "nonzero_parameters": nonzero}


@torch.no_grad()
def decode_speed(models: dict[str, nn.Module], vocab_size: int, *, prompt: int = 16, new_tokens: int = 32,
                 rounds: int = 3, seed: int = 0) -> dict[str, float]:
    """Greedy decoding tokens/s at batch 1 with the KV cache, on the CPU: the median of
    ``rounds``, the models taking turns within each round so that host noise hits all alike."""
    ids = torch.randint(vocab_size, (1, prompt), generator=torch.Generator().manual_seed(seed))
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            model.eval()
            start = time.perf_counter()
            cache = model.new_cache()
            logits = model(ids, cache=cache)
            for _ in range(new_tokens):
                token = logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
                logits = model(token, cache=cache)
            times[name].append(time.perf_counter() - start)
    return {name: new_tokens / statistics.median(ts) for name, ts in times.items()}


@torch.no_grad()
def kl_from(reference: nn.Module, model: nn.Module, data_dir: Path, context_length: int, *, windows: int = 8) -> float:
    """Mean over validation tokens of KL(p_reference || p_model) of the next-token
    distributions, in nats: how far compression moved the model's predictions."""
    from corekit.data.windows import ShardSet, ValWindows

    data = ValWindows(ShardSet(data_dir, "val", check_hash=True), context_length, windows)
    total, count = 0.0, 0
    for inputs, _ in torch.utils.data.DataLoader(data, batch_size=8):
        log_p = F.log_softmax(reference(inputs).float(), dim=-1).flatten(0, 1)  # (N, V)
        log_q = F.log_softmax(model(inputs).float(), dim=-1).flatten(0, 1)
        total += F.kl_div(log_q, log_p, log_target=True, reduction="sum").item()
        count += log_p.shape[0]
    return total / count


def figures(model: nn.Module, weights: Path, data_dir: Path | None, context_length: int, windows: int) -> dict:
    """Parameters, weight file size and validation perplexity of one model."""
    from corekit.train.evaluate import perplexity, validation_loss

    out: dict = {**count_parameters(model), "weight_bytes": weights.stat().st_size}
    if data_dir is not None:
        loss = validation_loss(model, data_dir, context_length, max_windows=windows)
        out.update(val_loss=loss, val_perplexity=perplexity(loss))
    return out
