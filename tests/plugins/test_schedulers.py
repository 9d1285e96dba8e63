"""Scheduler plugins: lr multipliers at chosen steps, by hand, and through LambdaLR."""

from __future__ import annotations

import math

import pytest
import torch


def factor(registry, spec, step, max_steps):
    params = registry.get("scheduler", spec["name"]).params.model_validate(spec)
    return params.factor(step, max_steps)


@pytest.mark.parametrize(
    "spec,max_steps,expected",
    [
        # warmup (s+1)/(w+1), then cosine from 1 to the floor
        ({"name": "cosine", "warmup_steps": 10, "min_lr_ratio": 0.1}, 110,
         {0: 1 / 11, 9: 10 / 11, 10: 1.0, 60: 0.1 + 0.9 * 0.5, 85: 0.1 + 0.9 * 0.5 * (1 + math.cos(0.75 * math.pi)),
          110: 0.1, 500: 0.1}),
        ({"name": "linear", "warmup_steps": 4, "min_lr_ratio": 0.0}, 104,
         {0: 0.2, 3: 0.8, 4: 1.0, 54: 0.5, 79: 0.25, 104: 0.0}),
        ({"name": "constant", "warmup_steps": 3}, 50, {0: 0.25, 2: 0.75, 3: 1.0, 49: 1.0}),
        ({"name": "constant"}, 50, {0: 1.0, 49: 1.0}),
        # plateau until 80% of 100 steps, then decay to the floor over 20 steps
        ({"name": "wsd", "warmup_steps": 5, "decay_fraction": 0.2, "min_lr_ratio": 0.1}, 100,
         {0: 1 / 6, 5: 1.0, 79: 1.0, 80: 1.0, 90: 0.1 + 0.9 * 0.5, 100: 0.1}),
        ({"name": "wsd", "decay_fraction": 0.5, "decay_shape": "sqrt"}, 100,
         {49: 1.0, 50: 1.0, 75: 1 - math.sqrt(0.5), 100: 0.0}),
        ({"name": "wsd", "decay_fraction": 0.5, "decay_shape": "cosine"}, 100, {75: 0.5, 100: 0.0}),
    ],
)
def test_schedule_values(registry, spec, max_steps, expected):
    for step, value in expected.items():
        assert factor(registry, spec, step, max_steps) == pytest.approx(value, abs=1e-12), (spec, step)


@pytest.mark.parametrize("name", ["cosine", "linear", "constant", "wsd"])
def test_lambda_lr_applies_the_factor_each_step(registry, name):
    weight = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([weight], lr=0.5)
    spec = {"name": name, "warmup_steps": 3}
    sched = registry.build("scheduler", spec, opt, 20)
    for s in range(25):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * factor(registry, spec, s, 20))
        opt.step()
        sched.step()


def test_schedule_params_are_validated(registry):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="min_lr_ratio"):
        registry.get("scheduler", "cosine").params(min_lr_ratio=1.5)
    with pytest.raises(ValidationError, match="decay_fraction"):
        registry.get("scheduler", "wsd").params(decay_fraction=0)
