"""The ONNX graph with its KV cache, across the component matrix, checked in onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import attention, tiny_model

from corekit.export.graph import cache_layout, export_graph, past_names, present_names
from corekit.export.verify import parity, run_session, session

# Every built-in attention kind and kernel, norm, activation, positional scheme and block
# layout appears at least once; so do sliding windows, biases and an untied LM head.
MATRIX = {
    "mha-flash-layernorm-gelu-learned-pre": dict(attention=attention("mha"), position="learned"),
    "gqa-math-rmsnorm-swiglu-rope-pre": dict(attention=attention("gqa", "math"), norm="rmsnorm",
                                             mlp={"activation": "swiglu"}, position="rope"),
    "mqa-flash-rmsnorm-geglu-alibi-post": dict(attention=attention("mqa"), norm="rmsnorm",
                                               mlp={"activation": "geglu"}, position="alibi", layout="post"),
    "gqa-flash-layernorm-relu-sinusoidal-parallel": dict(attention=attention("gqa"), mlp={"activation": "relu"},
                                                         position="sinusoidal", layout="parallel"),
    "mha-math-silu-nopos-post-bias": dict(attention=attention("mha", "math"), mlp={"activation": "silu"},
                                          position="none", layout="post", bias=True),
    "gqa-flash-window-rope-parallel": dict(attention=attention("gqa", window=4), norm="rmsnorm",
                                           mlp={"activation": "swiglu"}, position="rope", layout="parallel"),
    "mqa-math-gelu-tanh-untied": dict(attention=attention("mqa", "math"),
                                      mlp={"activation": {"name": "gelu", "approximate": "tanh"}},
                                      tie_embeddings=False),
}


def chained_decode_diff(model, path, prompt_len: int = 5, steps: int = 3) -> float:
    """Prefill in onnxruntime, feed the present back for ``steps`` 1-token decodes, and compare
    every step's logits with PyTorch recomputing the whole sequence without a cache."""
    sess = session(path)
    layout = cache_layout(model)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.vocab_size, (2, prompt_len + steps), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # a left-padded row
    with torch.no_grad():
        full = model(ids, mask).numpy()  # (B, T, V) without a cache
    empty = [torch.zeros(2, layout.n_kv_heads, 0, layout.head_dim) for _ in range(2 * layout.n_layers)]
    out = run_session(sess, (ids[:, :prompt_len], mask[:, :prompt_len], *empty))
    real = mask[:, :prompt_len].bool().numpy()  # a padding query's output is meaningless
    worst = float(np.abs(out[0] - full[:, :prompt_len])[real].max())
    for t in range(prompt_len, prompt_len + steps):
        past = [torch.from_numpy(a) for a in out[1:]]
        out = run_session(sess, (ids[:, t:t + 1], mask[:, :t + 1], *past))
        worst = max(worst, float(np.abs(out[0][:, 0] - full[:, t]).max()))
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MATRIX))
def test_export_matches_pytorch_for_prefill_and_decode(registry, tmp_path, name):
    # two layers for the first entries (the cache of every layer), one for the rest (export time)
    layers = 2 if list(MATRIX).index(name) < 2 else 1
    model = tiny_model(registry, seed=3, n_layers=layers, **MATRIX[name])
    path = tmp_path / "model.onnx"
    layout = export_graph(model, path)
    check = parity(model, path, layout)
    # random past at several (batch, new, past) shapes: prefill with no past and 1-token decodes
    assert any(past == 0 and seq > 1 for _, seq, past in check["cases"])
    assert any(past > 0 and seq == 1 for _, seq, past in check["cases"])
    assert check["max_abs_logit_diff"] <= 1e-4, check
    assert check["max_abs_cache_diff"] <= 1e-4, check
    # the cache the graph returns is the one it needs: chained decoding equals full recompute
    assert chained_decode_diff(model, path) <= 1e-4


def test_graph_io_names_and_dynamic_axes(registry, tmp_path):
    model = tiny_model(registry, attention=attention("gqa"), position="rope", n_layers=2)
    path = tmp_path / "model.onnx"
    layout = export_graph(model, path)
    sess = session(path)
    inputs = {i.name: i.shape for i in sess.get_inputs()}
    outputs = {o.name: o.shape for o in sess.get_outputs()}
    assert list(inputs) == ["input_ids", "attention_mask", *past_names(2)]
    assert list(outputs) == ["logits", *present_names(2)]
    assert (layout.n_layers, layout.n_kv_heads, layout.head_dim) == (2, 2, 8)
    assert inputs["input_ids"] == ["batch", "sequence"]
    assert inputs["past_key_values.0.key"] == ["batch", 2, "past_sequence", 8]
    assert outputs["logits"] == ["batch", "sequence", 64]
    assert outputs["present.1.value"][2] == "past_sequence + sequence"


def test_exported_gqa_never_asks_sdpa_for_enable_gqa(registry, tmp_path, monkeypatch):
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs.get("enable_gqa", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = tiny_model(registry, attention=attention("gqa"), n_layers=1)
    layout = export_graph(model, tmp_path / "model.onnx")
    assert seen and not any(seen)
    assert parity(model, tmp_path / "model.onnx", layout)["max_abs_logit_diff"] <= 1e-4
