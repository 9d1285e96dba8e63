"""Optimizer plugins against hand-computed updates, and their weight-decay groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers import tiny_model


class Toy(nn.Module):
    """One decayed weight matrix, one bias, one embedding: all three group rules."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.emb = nn.Embedding(3, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
            self.lin.bias.copy_(torch.tensor([0.25, -0.75]))
            self.emb.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))


GRADS = {"lin.weight": torch.tensor([[0.1, -0.2], [0.3, 0.4]]), "lin.bias": torch.tensor([0.5, -0.5]),
         "emb.weight": torch.tensor([[0.2, 0.0], [0.0, -0.1], [0.3, 0.3]])}


def step(model: nn.Module, opt, grads=GRADS) -> None:
    for name, p in model.named_parameters():
        p.grad = grads[name].clone()
    opt.step()


@pytest.mark.parametrize("fused", [True, False])
def test_adamw_one_step(registry, fused):
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.95, 1e-8
    model = Toy()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = registry.build("optimizer", {"name": "adamw", "lr": lr, "weight_decay": wd, "fused": fused}, model)
    step(model, opt)
    for name, p in model.named_parameters():
        g, p0 = GRADS[name], before[name]
        m_hat = (1 - b1) * g / (1 - b1)
        v_hat = (1 - b2) * g**2 / (1 - b2)
        decay = wd if name == "lin.weight" else 0.0  # biases and embeddings are not decayed
        expected = p0 * (1 - lr * decay) - lr * m_hat / (v_hat.sqrt() + eps)
        torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_two_steps(registry, nesterov):
    lr, mom, wd = 0.1, 0.9, 0.01
    model = Toy()
    p0 = model.lin.weight.detach().clone()
    opt = registry.build("optimizer",
                         {"name": "sgd", "lr": lr, "momentum": mom, "weight_decay": wd, "nesterov": nesterov}, model)
    step(model, opt)
    g = GRADS["lin.weight"]
    d1 = g + wd * p0
    buf = d1
    p1 = p0 - lr * (d1 + mom * buf if nesterov else buf)
    torch.testing.assert_close(model.lin.weight.detach(), p1, atol=1e-7, rtol=1e-6)
    step(model, opt)
    d2 = g + wd * p1
    buf = mom * buf + d2
    p2 = p1 - lr * (d2 + mom * buf if nesterov else buf)
    torch.testing.assert_close(model.lin.weight.detach(), p2, atol=1e-7, rtol=1e-6)


def test_lion_two_steps(registry):
    lr, wd, b1, b2 = 0.01, 0.5, 0.9, 0.99
    model = Toy()
    p0 = model.lin.weight.detach().clone()
    opt = registry.build("optimizer", {"name": "lion", "lr": lr, "weight_decay": wd, "betas": (b1, b2)}, model)
    g = GRADS["lin.weight"]
    step(model, opt)
    p1 = p0 * (1 - lr * wd) - lr * torch.sign((1 - b1) * g)
    m = (1 - b2) * g
    torch.testing.assert_close(model.lin.weight.detach(), p1)
    g2 = {k: -2 * v for k, v in GRADS.items()}
    step(model, opt, g2)
    p2 = p1 * (1 - lr * wd) - lr * torch.sign(b1 * m + (1 - b1) * g2["lin.weight"])
    torch.testing.assert_close(model.lin.weight.detach(), p2)
    # the embedding is not decayed: only the sign steps move it
    e0, ge, ge2 = Toy().emb.weight.detach(), GRADS["emb.weight"], g2["emb.weight"]
    e1 = e0 - lr * torch.sign((1 - b1) * ge)
    e2 = e1 - lr * torch.sign(b1 * (1 - b2) * ge + (1 - b1) * ge2)
    torch.testing.assert_close(model.emb.weight.detach(), e2)


def _group_names(model, opt):
    names = {id(p): n for n, p in model.named_parameters()}
    return [(g["weight_decay"], sorted(names[id(p)] for p in g["params"])) for g in opt.param_groups]


def test_weight_decay_groups_of_a_model(registry):
    model = tiny_model(registry, bias=True, n_layers=1)  # learned positions, layernorm, tied head
    opt = registry.build("optimizer", {"name": "adamw", "weight_decay": 0.1}, model)
    (wd, decayed), (nd, plain) = _group_names(model, opt)
    assert wd == 0.1 and nd == 0.0
    assert decayed == sorted(["blocks.0.attn.qkv.weight", "blocks.0.attn.out.weight",
                              "blocks.0.mlp.up.weight", "blocks.0.mlp.down.weight"])
    assert "tok_emb.weight" in plain and "positional.table.weight" in plain
    assert "blocks.0.norm1.weight" in plain and "blocks.0.attn.qkv.bias" in plain
    assert len(decayed) + len(plain) == len(list(model.parameters()))  # the tied head counted once


def test_weight_decay_groups_can_include_embeddings_norms_and_biases(registry):
    model = tiny_model(registry, bias=True, n_layers=1)
    opt = registry.build("optimizer", {"name": "adamw", "decay_embeddings": True, "decay_norms": True,
                                       "decay_biases": True}, model)
    assert len(opt.param_groups) == 1
    assert len(opt.param_groups[0]["params"]) == len(list(model.parameters()))


def test_adamw_is_fused_on_cpu_when_available(registry):
    opt = registry.build("optimizer", "adamw", Toy())
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")
    assert math.isclose(opt.defaults["lr"], 3e-4)
