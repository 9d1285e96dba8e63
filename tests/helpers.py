"""Helpers shared by tests: build small models from spec dicts."""

from __future__ import annotations

import torch

from corekit.assemble import build_model
from corekit.spec import ModelSpec


def tiny_spec(registry, **overrides) -> ModelSpec:
    """A validated small [model] section; keyword arguments replace fields."""
    data = {
        "context_length": 32,
        "d_model": 32,
        "n_layers": 2,
        "vocab_size": 64,
        "attention": {"name": "mha", "n_heads": 4},
        "norm": "layernorm",
        "mlp": {"activation": "gelu"},
        "position": "learned",
    }
    data.update(overrides)
    return registry.resolve(ModelSpec).model_validate(data)


def tiny_model(registry, seed: int = 0, **overrides):
    """A randomly initialised model of :func:`tiny_spec`, in eval mode."""
    torch.manual_seed(seed)
    return build_model(tiny_spec(registry, **overrides), registry).eval()


def attention(name: str, kernel: str = "flash", **extra) -> dict:
    """An attention table: ``mha``, ``gqa`` (2 KV heads) or ``mqa`` with 4 query heads."""
    table = {"name": name, "n_heads": 4, "kernel": kernel, **extra}
    if name == "gqa":
        table.setdefault("n_kv_heads", 2)
    return table
