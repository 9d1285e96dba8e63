"""Norm plugins against hand-written formulas."""

from __future__ import annotations

import pytest
import torch

from corekit.params import ModelContext

CTX = ModelContext(d_model=16, n_layers=1, n_heads=2, n_kv_heads=2, context_length=8,
                   vocab_size=10, bias=True, dropout=0.0, layout="pre")


def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    return module


def test_layernorm_formula(registry):
    norm = _randomise(registry.build("norm", {"name": "layernorm", "eps": 1e-5}, CTX))
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    norm = norm.double()
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias
    torch.testing.assert_close(norm(x), expected)


def test_layernorm_bias_follows_model_bias(registry):
    from dataclasses import replace

    assert registry.build("norm", "layernorm", CTX).bias is not None
    assert registry.build("norm", "layernorm", replace(CTX, bias=False)).bias is None
    assert registry.build("norm", {"name": "layernorm", "bias": True}, replace(CTX, bias=False)).bias is not None


@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_rmsnorm_formula(registry, eps):
    norm = _randomise(registry.build("norm", {"name": "rmsnorm", "eps": eps}, CTX)).double()
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    assert sum(p.numel() for p in norm.parameters()) == 16  # scale only


def test_rmsnorm_does_not_centre(registry):
    norm = registry.build("norm", "rmsnorm", CTX)
    x = torch.full((1, 16), 3.0)
    torch.testing.assert_close(norm(x), torch.ones(1, 16), atol=1e-5, rtol=0)
