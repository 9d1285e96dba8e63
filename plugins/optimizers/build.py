"""Builds of the optimizer plugins (their weight-decay groups come from :func:`corekit.optim.decay_groups`),
and Lion."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from corekit.optim import decay_groups


def _fused_ok(model: nn.Module) -> bool:
    devices = {p.device.type for p in model.parameters()}
    return devices <= {"cuda", "cpu"} and all(p.dtype.is_floating_point for p in model.parameters())


def build_adamw(params, model: nn.Module) -> torch.optim.Optimizer:
    """``torch.optim.AdamW``, fused where the device supports it."""
    fused = _fused_ok(model) if params.fused is None else params.fused
    kwargs = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(decay_groups(model, params), lr=params.lr, betas=params.betas, eps=params.eps, **kwargs)


def build_sgd(params, model: nn.Module) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` (its weight decay is L2, added to the gradient)."""
    return torch.optim.SGD(
        decay_groups(model, params), lr=params.lr, momentum=params.momentum,
        nesterov=params.nesterov, dampening=params.dampening, foreach=True,
    )


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): ``p -= lr * (sign(b1*m + (1-b1)*g) + wd*p)``, then
    ``m = b2*m + (1-b2)*g``."""

    def __init__(self, params: Iterable, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                update = (m * beta1 + p.grad * (1 - beta1)).sign_()
                p.mul_(1 - group["lr"] * group["weight_decay"]).add_(update, alpha=-group["lr"])
                m.mul_(beta2).add_(p.grad, alpha=1 - beta2)
        return loss


def build_lion(params, model: nn.Module) -> Lion:
    """:class:`Lion` over the decay groups."""
    return Lion(decay_groups(model, params), lr=params.lr, betas=params.betas)
