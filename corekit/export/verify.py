"""Checks an exported graph against the PyTorch model it came from, in onnxruntime.

:func:`parity` runs both on the same random inputs at several (batch, new tokens, past)
shapes, covering a prefill with no past, 1-token decode steps with a past, and a left-padded
row, and returns the largest absolute logit (and cache) difference.
:class:`OnnxLogits` wraps a graph as a module so the run's own validation code can score it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from corekit.errors import CorekitError
from corekit.export.graph import CacheLayout, CachedDecoder, random_inputs

#: (batch, new tokens, past length) checked at export
CASES: tuple[tuple[int, int, int], ...] = ((1, 7, 0), (2, 5, 0), (2, 1, 6), (3, 1, 1), (2, 4, 3))


def session(path: str | Path, threads: int | None = None):
    """A CPU onnxruntime session for ``path``, set up as the edge runtime sets up its own."""
    from corekit.edge.runtime import cpu_session

    return cpu_session(path, threads)


def run_session(sess, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """Feed torch tensors to ``sess`` in input order; return its outputs."""
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {name: t.numpy() for name, t in zip(names, inputs, strict=True)})


@torch.no_grad()
def parity(
    model: nn.Module, path: str | Path, layout: CacheLayout, *, cases=CASES, seed: int = 0
) -> dict[str, object]:
    """Largest |torch - onnxruntime| over ``cases``: ``{"max_abs_logit_diff", "max_abs_cache_diff", "cases"}``."""
    sess = session(path)
    wrapper = CachedDecoder(model.eval()).eval()
    gen = torch.Generator().manual_seed(seed)
    logit_diff = cache_diff = 0.0
    context = model.context_length
    checked = []
    for batch, seq, past in cases:
        if past + seq > context:
            continue
        inputs = random_inputs(layout, model.vocab_size, batch, seq, past, generator=gen)
        expected = wrapper(*inputs)
        got = run_session(sess, inputs)
        logit_diff = max(logit_diff, _max_diff(got[0], expected[0].numpy()))
        for g, e in zip(got[1:], expected[1:], strict=True):
            cache_diff = max(cache_diff, _max_diff(g, e.numpy()))
        checked.append([batch, seq, past])
    if not checked:
        raise CorekitError(f"cannot check the export: no parity case fits the context length {context}")
    return {"max_abs_logit_diff": logit_diff, "max_abs_cache_diff": cache_diff, "cases": checked}


def _max_diff(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute difference; inf when either side has a NaN or inf (max() would drop a NaN)."""
    if not (np.isfinite(got).all() and np.isfinite(expected).all()):
        return float("inf")
    return float(np.abs(got - expected).max()) if got.size else 0.0


class OnnxLogits(nn.Module):
    """A graph as a module mapping (B, T) ids to (B, T, V) logits, with an empty past."""

    def __init__(self, path: str | Path, layout: CacheLayout, vocab_size: int, context_length: int) -> None:
        super().__init__()
        self.sess = session(path)
        self.layout = layout
        self.vocab_size = vocab_size
        self.context_length = context_length

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, seq = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(batch, seq, dtype=torch.long)
        shape = (batch, self.layout.n_kv_heads, 0, self.layout.head_dim)
        past = [torch.zeros(shape) for _ in range(2 * self.layout.n_layers)]
        return torch.from_numpy(run_session(self.sess, (input_ids, attention_mask, *past))[0])
