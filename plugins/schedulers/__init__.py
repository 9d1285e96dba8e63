"""Learning-rate schedules, as multipliers of the optimizer's peak ``lr``.

- ``cosine``: linear warmup, then cosine decay to a floor (Loshchilov & Hutter 2017,
  arXiv:1608.03983; the GPT-3/Chinchilla default).
- ``linear``: linear warmup, then linear decay to a floor.
- ``constant``: linear warmup, then constant.
- ``wsd``: warmup-stable-decay: warmup, a constant plateau, and a final decay over the
  last ``decay_fraction`` of training (Hu et al. 2024, arXiv:2404.06395; Hägele et al. 2024,
  arXiv:2405.18392, whose ``1 - sqrt`` shape is ``decay_shape = "sqrt"``).

Warmup is ``(step + 1) / (warmup_steps + 1)``, so the first step already moves. Each
schedule's multiplier is a pure function, :meth:`ScheduleParams.factor`; ``build`` wraps it
in a ``torch.optim.lr_scheduler.LambdaLR`` stepped once per optimizer step.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, NonNegativeInt

from corekit import hookimpl
from corekit.params import Params

Floor = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of the peak")


class ScheduleParams(Params):
    """Fields shared by the schedules."""

    warmup_steps: NonNegativeInt = Field(0, description="steps of linear warmup from ~0 to the peak")

    def warmup(self, step: int) -> float | None:
        """The warmup multiplier at ``step``, or None once warmup is over."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        return None

    def progress(self, step: int, max_steps: int) -> float:
        """Fraction of the post-warmup steps done at ``step``, in [0, 1]."""
        span = max(1, max_steps - self.warmup_steps)
        return min(1.0, max(0.0, (step - self.warmup_steps) / span))

    def factor(self, step: int, max_steps: int) -> float:
        """The lr multiplier for optimizer step ``step`` (0-based) of ``max_steps``."""
        raise NotImplementedError


class CosineParams(ScheduleParams):
    """Linear warmup, then cosine decay to min_lr_ratio of the peak."""

    name: Literal["cosine"] = "cosine"
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="final lr as a fraction of the peak")

    def factor(self, step: int, max_steps: int) -> float:
        w = self.warmup(step)
        if w is not None:
            return w
        p = self.progress(step, max_steps)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


class LinearParams(ScheduleParams):
    """Linear warmup, then linear decay to min_lr_ratio of the peak."""

    name: Literal["linear"] = "linear"
    min_lr_ratio: float = Floor

    def factor(self, step: int, max_steps: int) -> float:
        w = self.warmup(step)
        if w is not None:
            return w
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * (1 - self.progress(step, max_steps))


class ConstantParams(ScheduleParams):
    """Linear warmup, then the peak lr throughout."""

    name: Literal["constant"] = "constant"

    def factor(self, step: int, max_steps: int) -> float:
        w = self.warmup(step)
        return 1.0 if w is None else w


class WSDParams(ScheduleParams):
    """Warmup, a stable plateau, then decay over the last decay_fraction of the steps."""

    name: Literal["wsd"] = "wsd"
    decay_fraction: float = Field(0.2, gt=0.0, le=1.0, description="share of all steps spent decaying")
    decay_shape: Literal["linear", "cosine", "sqrt"] = Field("linear", description="shape of the final decay")
    min_lr_ratio: float = Floor

    def factor(self, step: int, max_steps: int) -> float:
        w = self.warmup(step)
        if w is not None:
            return w
        decay_start = max(self.warmup_steps, max_steps - round(self.decay_fraction * max_steps))
        if step < decay_start:
            return 1.0
        q = min(1.0, (step - decay_start) / max(1, max_steps - decay_start))
        shape = {"linear": 1 - q, "cosine": 0.5 * (1 + math.cos(math.pi * q)), "sqrt": 1 - math.sqrt(q)}
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * shape[self.decay_shape]


def build(params: ScheduleParams, optimizer, max_steps: int):
    """A ``LambdaLR`` applying ``params.factor`` at every optimizer step."""
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, lambda step: params.factor(step, max_steps))


@hookimpl
def corekit_register_components(registry):
    for params in (CosineParams, LinearParams, ConstantParams, WSDParams):
        registry.add("scheduler", params, build)
