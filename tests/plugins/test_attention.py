"""Attention plugins (mha, gqa, mqa) and kernels (math, flash)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import attention, tiny_model

ATTENTIONS = ["mha", "gqa", "mqa"]
KERNELS = ["math", "flash"]
POSITIONS = ["learned", "sinusoidal", "rope", "alibi", "none"]


@pytest.mark.parametrize("name,kernel", itertools.product(ATTENTIONS, KERNELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_shape_and_dtype(registry, name, kernel, dtype):
    model = tiny_model(registry, attention=attention(name, kernel)).to(dtype)
    ids = torch.randint(0, 64, (3, 11))
    logits = model(ids)
    assert logits.shape == (3, 11, 64)
    assert logits.dtype == dtype
    attn = model.blocks[0].attn
    expected_kv = {"mha": 4, "gqa": 2, "mqa": 1}[name]
    assert attn.n_kv_heads == expected_kv
    # the fused projection holds H query heads and H_kv key and value heads
    assert attn.qkv.weight.shape == ((4 + 2 * expected_kv) * 8, 32)


@pytest.mark.parametrize("name,position,kernel", itertools.product(ATTENTIONS, POSITIONS, KERNELS))
def test_causality(registry, name, position, kernel):
    """Changing the tokens after position t leaves every output up to t unchanged."""
    model = tiny_model(registry, attention=attention(name, kernel), position=position)
    torch.manual_seed(1)
    ids = torch.randint(0, 64, (2, 16))
    t = 9
    changed = ids.clone()
    changed[:, t + 1:] = torch.randint(0, 64, (2, 16 - t - 1))
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def test_gqa_with_all_kv_heads_equals_mha(registry):
    mha = tiny_model(registry, attention=attention("mha"))
    gqa = tiny_model(registry, seed=5, attention=attention("gqa", n_kv_heads=4))
    gqa.load_state_dict(mha.state_dict())
    ids = torch.randint(0, 64, (2, 12))
    torch.testing.assert_close(gqa(ids), mha(ids), atol=0, rtol=0)


def test_gqa_equals_mha_with_shared_kv_heads(registry):
    """gqa with 2 KV heads is mha whose heads 0-1 share one K/V and heads 2-3 another."""
    gqa = tiny_model(registry, attention=attention("gqa", n_kv_heads=2))
    mha = tiny_model(registry, seed=3, attention=attention("mha"))
    state = gqa.state_dict()
    d, h = 8, 4
    for i in range(2):
        w = state[f"blocks.{i}.attn.qkv.weight"]
        q, k, v = w.split([h * d, 2 * d, 2 * d])
        # KV head g serves query heads 2g and 2g+1
        k = k.view(2, d, -1).repeat_interleave(2, dim=0).reshape(h * d, -1)
        v = v.view(2, d, -1).repeat_interleave(2, dim=0).reshape(h * d, -1)
        state[f"blocks.{i}.attn.qkv.weight"] = torch.cat([q, k, v])
    mha.load_state_dict(state)
    ids = torch.randint(0, 64, (2, 12))
    torch.testing.assert_close(mha(ids), gqa(ids), atol=1e-6, rtol=0)


def test_mqa_equals_gqa_with_one_kv_head(registry):
    mqa = tiny_model(registry, attention=attention("mqa"))
    gqa = tiny_model(registry, seed=2, attention=attention("gqa", n_kv_heads=1))
    gqa.load_state_dict(mqa.state_dict())
    ids = torch.randint(0, 64, (2, 10))
    torch.testing.assert_close(gqa(ids), mqa(ids), atol=0, rtol=0)


@pytest.mark.parametrize(
    "position,window,padded",
    [
        ("rope", None, False),
        ("alibi", None, False),
        ("learned", 4, False),
        ("rope", 5, False),
        ("alibi", 3, False),
        ("rope", None, True),
        ("alibi", 4, True),
        ("sinusoidal", None, True),
    ],
)
def test_flash_equals_math(registry, position, window, padded):
    extra = {"window": window} if window else {}
    math_model = tiny_model(registry, attention=attention("gqa", "math", **extra), position=position)
    flash_model = tiny_model(registry, seed=9, attention=attention("gqa", "flash", **extra), position=position)
    flash_model.load_state_dict(math_model.state_dict())
    torch.manual_seed(4)
    ids = torch.randint(0, 64, (3, 14))
    mask = None
    if padded:
        mask = torch.ones(3, 14, dtype=torch.long)
        mask[0, :5] = 0  # left padding of different lengths
        mask[1, :1] = 0
    out_math = math_model(ids, attention_mask=mask)
    out_flash = flash_model(ids, attention_mask=mask)
    torch.testing.assert_close(out_flash, out_math, atol=1e-5, rtol=0)


def test_kernels_match_reference_softmax(registry):
    """Both kernels against a hand-written softmax(QK^T/sqrt(d) + bias)V and F.sdpa's causal mode."""
    from corekit_plugins.attention.sdpa import FlashAttention, MathAttention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 8, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    ref = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8) + bias, dim=-1) @ v
    for kernel in (MathAttention(), FlashAttention()):
        torch.testing.assert_close(kernel(q, k, v, bias, False, 0.0), ref)
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        torch.testing.assert_close(kernel(q, k, v, None, True, 0.0), causal)


def test_sliding_window_limits_what_a_query_sees(registry):
    """One layer, window 4: position t depends on tokens t-3..t only."""
    model = tiny_model(registry, n_layers=1, attention=attention("mha", "math", window=4), position="rope")
    ids = torch.randint(0, 64, (1, 16))
    changed = ids.clone()
    changed[0, :6] = (changed[0, :6] + 1) % 64  # positions 0-5 are outside the window of t >= 9
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, 9:], b[:, 9:], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 6:9], b[:, 6:9])


def test_sliding_window_against_hand_written_mask(registry):
    """The window mask: key j is visible to query i iff i - window < j <= i."""
    from corekit.modules.attention import AttnBatch
    from corekit.modules.positional import Positional

    batch = AttnBatch(Positional(), torch.arange(7).expand(1, 7), 0, None)
    bias, causal = batch.attention_bias(3, torch.float32)
    assert not causal
    expected = torch.tensor([[i - 3 < j <= i for j in range(7)] for i in range(7)])
    assert torch.equal(bias[0, 0] == 0, expected)


def test_attention_dropout_only_in_training(registry):
    model = tiny_model(registry, dropout=0.5, attention=attention("mha", "math"))
    ids = torch.randint(0, 64, (2, 8))
    torch.testing.assert_close(model(ids), model(ids))
    model.train()
    assert not torch.allclose(model(ids), model(ids))
