"""Positional plugins: learned, sinusoidal, rope, alibi and none."""

from __future__ import annotations

import math

import pytest
import torch

from corekit.params import ModelContext
from helpers import attention, tiny_model

CTX = ModelContext(d_model=16, n_layers=1, n_heads=4, n_kv_heads=4, context_length=32,
                   vocab_size=10, bias=False, dropout=0.0, layout="pre")


def test_sinusoidal_matches_vaswani_formula(registry):
    pe = registry.build("positional", "sinusoidal", CTX)
    positions = torch.arange(20)[None]
    out = pe.embed(positions)[0]
    for p in range(20):
        for i in range(8):
            angle = p / 10000 ** (2 * i / 16)
            assert out[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert out[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_learned_is_a_table_lookup(registry):
    pe = registry.build("positional", "learned", CTX)
    positions = torch.tensor([[3, 0, 7]])
    torch.testing.assert_close(pe.embed(positions)[0], pe.table.weight[[3, 0, 7]])
    assert pe.table.weight.shape == (32, 16)


def _rope_reference(x, positions, theta):
    """Rotate pair (i, i + D/2) by angle p * theta^(-2i/D), written with complex numbers."""
    d = x.shape[-1]
    half = d // 2
    freqs = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / d)
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    rot = torch.polar(torch.ones_like(freqs), positions[:, None].double() * freqs)  # (T, D/2)
    z = z * rot
    return torch.cat([z.real, z.imag], dim=-1)


def test_rope_matches_complex_rotation(registry):
    rope = registry.build("positional", {"name": "rope", "theta": 500.0}, CTX)
    positions = torch.tensor([[0, 1, 5, 17, 31]])
    q = torch.randn(1, 4, 5, 4)
    k = torch.randn(1, 2, 5, 4)
    q_rot, k_rot = rope.rotate(q, k, rope.prepare(positions))
    torch.testing.assert_close(q_rot.double(), _rope_reference(q, positions[0], 500.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(k_rot.double(), _rope_reference(k, positions[0], 500.0), atol=1e-5, rtol=0)


def test_rope_scores_depend_on_relative_position_only(registry):
    rope = registry.build("positional", "rope", CTX)
    q, k = torch.randn(1, 1, 1, 4), torch.randn(1, 1, 1, 4)

    def score(m, n):
        qr, _ = rope.rotate(q, k, rope.prepare(torch.tensor([[m]])))
        _, kr = rope.rotate(q, k, rope.prepare(torch.tensor([[n]])))
        return (qr * kr).sum().item()

    assert score(7, 3) == pytest.approx(score(14, 10), abs=1e-5)
    assert score(7, 3) != pytest.approx(score(7, 5), abs=1e-3)


def test_alibi_slopes_from_the_paper():
    from corekit_plugins.positional.schemes import alibi_slopes

    assert alibi_slopes(8) == pytest.approx([2 ** -(i + 1) for i in range(8)])
    # 12 heads: the 8-head slopes, then every other slope of the 16-head sequence
    assert alibi_slopes(12) == pytest.approx([2 ** -(i + 1) for i in range(8)] + [2 ** -(0.5 + i) for i in range(4)])


def test_alibi_bias_is_minus_slope_times_distance(registry):
    alibi = registry.build("positional", "alibi", CTX)
    bias = alibi.score_bias(torch.arange(3, 6), torch.arange(6))  # queries 3..5, keys 0..5
    slopes = [2 ** (-2 * (h + 1)) for h in range(4)]  # 4 heads: 2^(-8/4 * i)
    for h in range(4):
        for qi, i in enumerate(range(3, 6)):
            for j in range(i + 1):
                assert bias[h, qi, j].item() == pytest.approx(-slopes[h] * (i - j))


def test_no_position_is_order_blind(registry):
    """Without positions, one layer's last output ignores the order of earlier tokens."""
    model = tiny_model(registry, n_layers=1, position="none", attention=attention("mha", "math"))
    ids = torch.tensor([[5, 9, 2, 7, 1, 3]])
    shuffled = torch.tensor([[2, 7, 5, 1, 9, 3]])
    torch.testing.assert_close(model(ids)[0, -1], model(shuffled)[0, -1], atol=1e-5, rtol=0)
    learned = tiny_model(registry, n_layers=1, position="learned")
    assert not torch.allclose(learned(ids)[0, -1], learned(shuffled)[0, -1])


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope", "alibi", "none"])
def test_left_padding_does_not_change_positions(registry, position):
    """A left-padded row gives the same outputs as the row alone."""
    model = tiny_model(registry, position=position)
    ids = torch.randint(1, 64, (1, 7))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 7)], dim=1).long()
    torch.testing.assert_close(model(padded, attention_mask=mask)[:, 3:], model(ids), atol=1e-5, rtol=0)


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope", "alibi", "none"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_stay_in_their_dtype(registry, position, dtype):
    model = tiny_model(registry, position=position).to(dtype)
    ids = torch.randint(0, 64, (2, 9))
    logits = model(ids)
    assert logits.dtype == dtype
    reference = tiny_model(registry, position=position)(ids)  # fp32, same seed and weights
    torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.05)


def test_rope_frequencies_stay_float32_after_casting(registry):
    """A bf16 model must not round RoPE's angles: large positions stay accurate."""
    rope = registry.build("positional", "rope", CTX)
    rope.to(torch.bfloat16)
    cos, _ = rope.prepare(torch.tensor([[3000]]))
    angle = 3000 * 10000 ** (-0 / 4)
    assert cos.dtype == torch.float32
    assert cos[0, 0, 0, 0].item() == pytest.approx(math.cos(angle), abs=1e-3)
