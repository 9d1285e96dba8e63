"""The decoder as one ONNX graph with an explicit KV cache.

The graph takes ``input_ids`` (B, T), ``attention_mask`` (B, P + T) and the past keys and
values of every layer, each (B, H_kv, P, D), and returns ``logits`` (B, T, V) and the
present keys and values (B, H_kv, P + T, D). Batch, sequence and past length are dynamic
(the past may be empty), so the same graph runs the prefill (P = 0, T = prompt) and every
1-token decode step. Keys and values are cached per KV head, before GQA's expansion to the
query heads, which the model does with ``repeat_interleave`` (exportable, unlike
``scaled_dot_product_attention(enable_gqa=True)``).

The attention mask is always an input, so the model always builds its explicit
bottom-right-aligned mask: one code path for every (T, P), never a shape-dependent shortcut.
The graph is traced with ``torch.onnx.export(dynamo=True)``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from corekit.errors import CorekitError
from corekit.modules.kv_cache import KVCache

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
LOGITS = "logits"


def past_names(n_layers: int) -> list[str]:
    """Input names of the past keys and values, layer by layer: key then value."""
    return [f"past_key_values.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]


def present_names(n_layers: int) -> list[str]:
    """Output names of the present keys and values, in the order of :func:`past_names`."""
    return [f"present.{i}.{kind}" for i in range(n_layers) for kind in ("key", "value")]


@dataclass(frozen=True)
class CacheLayout:
    """The shape of one layer's cached keys (and values): (B, n_kv_heads, P, head_dim)."""

    n_layers: int
    n_kv_heads: int
    head_dim: int
    dtype: torch.dtype


def cache_layout(model: nn.Module) -> CacheLayout:
    """Learn the cache layout by running one token through ``model`` with an empty cache.

    This works for any attention that stores its keys through the cache API, built-in or
    third-party, without knowing how it splits its heads.
    """
    cache = model.new_cache()
    with torch.no_grad():
        model(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long), cache)
    if any(layer.k is None or layer.v is None for layer in cache.layers):
        raise CorekitError(
            "cannot export: a layer's attention did not store its keys/values in the KV cache "
            "(cache.update); the ONNX graph needs every layer's cache"
        )
    shapes = {tuple(layer.k.shape) for layer in cache.layers} | {tuple(layer.v.shape) for layer in cache.layers}
    if len(shapes) != 1:
        raise CorekitError(
            f"cannot export: the layers cache keys/values of different shapes {sorted(shapes)}; the ONNX "
            "graph needs every layer's cache as (batch, kv_heads, past, head_dim)"
        )
    (_, heads, _, dim), = shapes
    return CacheLayout(len(cache.layers), heads, dim, cache.layers[0].k.dtype)


class CachedDecoder(nn.Module):
    """A :class:`~corekit.modules.decoder.Decoder` with its cache as flat tensor inputs/outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *past: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        cache = KVCache(len(past) // 2)
        for i, layer in enumerate(cache.layers):
            layer.k, layer.v = past[2 * i], past[2 * i + 1]  # (B, H_kv, P, D)
        logits = self.model(input_ids, attention_mask, cache)  # (B, T, V)
        present = [t for layer in cache.layers for t in (layer.k, layer.v)]  # (B, H_kv, P + T, D)
        return (logits, *present)


def random_inputs(
    layout: CacheLayout, vocab_size: int, batch: int, seq: int, past: int, *, generator: torch.Generator,
    padded: bool = True,
) -> tuple[torch.Tensor, ...]:
    """Random graph inputs; with ``padded``, the last row is left-padded by one position."""
    ids = torch.randint(0, vocab_size, (batch, seq), generator=generator)
    mask = torch.ones(batch, past + seq, dtype=torch.long)
    if padded and batch > 1 and past + seq > 1:
        mask[-1, 0] = 0
    shape = (batch, layout.n_kv_heads, past, layout.head_dim)
    kv = [torch.randn(shape, generator=generator, dtype=layout.dtype) for _ in range(2 * layout.n_layers)]
    return (ids, mask, *kv)


def export_graph(model: nn.Module, path: str | Path, *, opset: int | None = None) -> CacheLayout:
    """Trace ``model`` (eval mode, fp32, CPU) with its KV cache into the ONNX file ``path``.

    Weights go into the file itself, or into ``<path>.data`` beside it when the model is
    over protobuf's 2 GB limit.
    """
    model = model.eval()
    layout = cache_layout(model)
    wrapper = CachedDecoder(model).eval()
    dim = torch.export.Dim
    batch, seq, past = dim("batch"), dim("sequence"), dim("past_sequence", min=0)
    # the example must not use sizes 0 or 1, which torch.export would specialise on
    example = random_inputs(layout, model.vocab_size, 2, 3, 4, generator=torch.Generator().manual_seed(0))
    dynamic = ({0: batch, 1: seq}, {0: batch, 1: dim.AUTO},
               tuple({0: batch, 2: past} for _ in range(2 * layout.n_layers)))
    names = past_names(layout.n_layers)
    outputs = [LOGITS, *present_names(layout.n_layers)]
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper, example, dynamo=True, dynamic_shapes=dynamic, opset_version=opset, verbose=False,
                input_names=[INPUT_IDS, ATTENTION_MASK, *names], output_names=outputs,
            )
    except Exception as exc:  # the exporter raises many types; the message is what helps
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorekitError(
            f"torch.onnx could not export this model: {first}. Components must use ordinary torch ops; "
            "a plugin can offer an export-friendly module through the corekit_prepare_export hook"
        ) from exc
    finally:
        exporter_log.setLevel(level)
    program.save(str(path))
    return layout
