"""Activation plugins against hand-written formulas, and the MLP built around them."""

from __future__ import annotations

import math

import pytest
import torch

from corekit.params import ModelContext
from helpers import tiny_model

CTX = ModelContext(d_model=16, n_layers=1, n_heads=2, n_kv_heads=2, context_length=8,
                   vocab_size=10, bias=False, dropout=0.0, layout="pre")
X = torch.linspace(-5, 5, 101, dtype=torch.float64)


def gelu_exact(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize(
    "spec,formula",
    [
        ({"name": "gelu"}, gelu_exact),
        ({"name": "gelu", "approximate": "tanh"}, gelu_tanh),
        ({"name": "relu"}, lambda x: torch.where(x > 0, x, torch.zeros_like(x))),
        ({"name": "silu"}, lambda x: x / (1 + torch.exp(-x))),
    ],
)
def test_plain_activations(registry, spec, formula):
    act = registry.build("activation", spec, CTX)
    assert registry.get("activation", spec["name"]).params.gated is False
    torch.testing.assert_close(act(X), formula(X))


@pytest.mark.parametrize(
    "spec,formula",
    [
        ({"name": "swiglu"}, lambda g, v: g / (1 + torch.exp(-g)) * v),
        ({"name": "geglu"}, lambda g, v: gelu_exact(g) * v),
        ({"name": "geglu", "approximate": "tanh"}, lambda g, v: gelu_tanh(g) * v),
    ],
)
def test_gated_activations(registry, spec, formula):
    act = registry.build("activation", spec, CTX)
    assert registry.get("activation", spec["name"]).params.gated is True
    x = torch.randn(4, 10, dtype=torch.float64)
    out = act(x)
    assert out.shape == (4, 5)
    torch.testing.assert_close(out, formula(x[:, :5], x[:, 5:]))


def test_gelu_rejects_unknown_approximation(registry):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="approximate"):
        registry.get("activation", "gelu").params(approximate="fast")


@pytest.mark.parametrize("activation,hidden,up_rows", [("gelu", 128, 128), ("swiglu", 128, 256), ("relu", None, 128)])
def test_mlp_widths(registry, activation, hidden, up_rows):
    mlp_spec = {"activation": activation} | ({"hidden_dim": hidden} if hidden else {})
    model = tiny_model(registry, mlp=mlp_spec)
    mlp = model.blocks[0].mlp
    assert mlp.up.weight.shape == (up_rows, 32)
    assert mlp.down.weight.shape == (32, up_rows // (2 if activation == "swiglu" else 1))


def test_mlp_computes_down_act_up(registry):
    model = tiny_model(registry, mlp={"activation": "swiglu", "hidden_dim": 24}, bias=True)
    mlp = model.blocks[0].mlp
    x = torch.randn(2, 3, 32)
    h = x @ mlp.up.weight.T + mlp.up.bias
    gate, value = h[..., :24], h[..., 24:]
    expected = (torch.nn.functional.silu(gate) * value) @ mlp.down.weight.T + mlp.down.bias
    torch.testing.assert_close(mlp(x), expected, atol=1e-6, rtol=1e-5)
