"""Choosing the next token from logits, in numpy: greedy, temperature, top-k and top-p.

:func:`check_sampling` also serves :mod:`corekit.generation` (torch), so both check alike.

The same rules as :mod:`corekit.generation` (top-p keeps the smallest set of most likely
tokens whose probability reaches p; Holtzman et al. 2020, arXiv:1904.09751), without torch.
"""

from __future__ import annotations

import math

import numpy as np

from corekit.errors import CorekitError


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Set every logit below the k-th largest of its row to -inf. (B, V) -> (B, V)."""
    k = min(k, logits.shape[-1])
    kth = np.partition(logits, -k, axis=-1)[:, -k][:, None]
    return np.where(logits < kth, -np.inf, logits)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Keep the smallest set of most likely tokens whose probability reaches ``p``. (B, V) -> (B, V)."""
    order = np.argsort(-logits, axis=-1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    probs = softmax(sorted_logits)
    before = np.cumsum(probs, axis=-1) - probs  # mass of strictly more likely tokens
    sorted_logits = np.where(before >= p, -np.inf, sorted_logits)
    out = np.full_like(logits, -np.inf)
    np.put_along_axis(out, order, sorted_logits, axis=-1)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for -inf entries (at least one finite per row)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def sample_next(
    logits: np.ndarray,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Choose the next token of each row from (B, V) logits; returns (B,) int64 ids."""
    if temperature == 0:
        return logits.argmax(axis=-1).astype(np.int64)
    rng = rng if rng is not None else np.random.default_rng()
    logits = logits.astype(np.float64)
    # subtracting the row maximum keeps a tiny temperature from overflowing
    logits = (logits - logits.max(axis=-1, keepdims=True)) / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    probs = softmax(logits)
    # inverse-CDF sampling: one uniform draw per row
    cdf = np.cumsum(probs, axis=-1)
    draws = rng.random((probs.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf <= draws).sum(axis=-1), probs.shape[-1] - 1).astype(np.int64)


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a :class:`CorekitError` listing every sampling argument out of range."""
    problems = []
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        problems.append(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        problems.append(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        problems.append(f"top_k must be an integer >= 1, got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        problems.append(f"top_p must be in (0, 1], got {top_p!r}")
    if problems:
        raise CorekitError("; ".join(problems))
