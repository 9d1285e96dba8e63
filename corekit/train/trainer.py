"""The one Lightning ``Trainer`` factory: pretraining, fine-tuning, distillation and pruning recovery.

Every training corekit runs gets its trainer from :func:`make_trainer`, so all of them share the
``[train]`` section's hardware, strategy and precision, the plugins' callbacks (the
``corekit_trainer_callbacks`` hook), CSV logging and progress: a rich progress bar on a terminal,
plain periodic lines (``step 40/600 ...``) when the output is a log file. Seeding stays with
the caller, since what must be drawn after the seed (the model's initial weights, the data
order) differs between them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint


def trainer_settings(t) -> dict[str, Any]:
    """The ``Trainer`` arguments a ``[train]`` section sets: hardware, strategy, precision and
    the optimisation loop (also used by ``benchmarks/train_speed.py``)."""
    return dict(
        accelerator="auto", strategy=t.strategy, devices=t.devices, num_nodes=t.num_nodes, precision=t.precision,
        max_steps=t.max_steps, accumulate_grad_batches=t.accumulate, gradient_clip_val=t.grad_clip or None,
        deterministic=not torch.cuda.is_available(),  # bit-reproducible runs on CPU
    )


class LogLines(Callback):
    """Progress as plain lines, for output that is not a terminal (a CI log, ``nohup``): one line
    every ``every`` optimizer steps and one after each validation, with the logged metrics."""

    def __init__(self, every: int, stream: Any = None) -> None:
        self.every = max(1, every)
        self.stream = stream
        self._start = 0.0
        self._shown = -1  # the last step printed (accumulation ends a batch several times per step)

    def _say(self, text: str) -> None:
        stream = self.stream or sys.stderr
        print(text, file=stream, flush=True)

    def _metrics(self, trainer: L.Trainer, keys: Iterable[str]) -> str:
        found = trainer.progress_bar_metrics | {k: v for k, v in trainer.callback_metrics.items() if k in keys}
        parts = []
        for key in keys:
            value = found.get(key)
            if value is not None:
                parts.append(f"{key} {float(value):.4g}")
        return ", ".join(parts)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        last = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if not trainer.is_global_zero or (step % self.every and step != last) or step == self._shown:
            return
        self._shown = step
        total = f"/{last}" if last else ""
        shown = self._metrics(trainer, ("train_loss", "loss", "tok_s"))
        elapsed = time.perf_counter() - self._start
        self._say(f"step {step}{total} ({elapsed:.0f} s)" + (f": {shown}" if shown else ""))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            shown = self._metrics(trainer, tuple(k for k in trainer.callback_metrics if k.startswith("val")))
            if shown:
                self._say(f"step {trainer.global_step} validation: {shown}")


def progress_callbacks(progress: bool, every: int) -> list[Callback]:
    """A rich progress bar on a terminal, :class:`LogLines` otherwise; nothing when ``progress`` is off."""
    if not progress:
        return []
    if sys.stderr.isatty():
        from lightning.pytorch.callbacks import RichProgressBar

        return [RichProgressBar(leave=True)]
    return [LogLines(every)]


def plugin_callbacks(spec, registry) -> list[Callback]:
    """Every plugin's callbacks for ``spec`` (the ``corekit_trainer_callbacks`` hook), in the order
    the plugins loaded (pluggy calls the last-loaded plugin first; the lists are put back in order)."""
    manager = getattr(registry, "plugin_manager", None)
    if manager is None:
        return []
    return [cb for cbs in reversed(manager.hook.corekit_trainer_callbacks(spec=spec)) for cb in (cbs or [])]


def make_trainer(
    spec,
    registry,
    *,
    root_dir: Path,
    log_dir: Path | None = None,
    progress: bool = True,
    callbacks: Iterable[Callback] = (),
    **overrides: Any,
) -> L.Trainer:
    """A Lightning ``Trainer`` for ``spec``'s ``[train]`` section.

    Args:
        spec: the validated run spec (its ``train`` section sets hardware, precision, strategy,
            steps, accumulation and clipping).
        registry: the plugin registry whose plugins may add callbacks.
        root_dir: Lightning's ``default_root_dir``.
        log_dir: where the CSV logger writes ``logs/version_N/metrics.csv`` (None: no logger).
        progress: show progress (a bar on a terminal, plain lines in a log).
        callbacks: the caller's own callbacks (a ``ModelCheckpoint`` switches checkpointing on).
        overrides: any other ``Trainer`` argument (e.g. ``val_check_interval``), applied last.
    """
    from lightning.pytorch.callbacks import ProgressBar

    t = spec.train
    own = list(callbacks)
    shown = progress_callbacks(progress, t.log_every)
    kwargs: dict[str, Any] = dict(
        **trainer_settings(t),
        default_root_dir=root_dir,
        log_every_n_steps=t.log_every,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=any(isinstance(cb, ProgressBar) for cb in shown),  # else Lightning adds its own bar
        enable_checkpointing=any(isinstance(cb, ModelCheckpoint) for cb in own),
        callbacks=[*own, *shown, *plugin_callbacks(spec, registry)],
    )
    if kwargs["enable_checkpointing"] and (t.strategy == "auto" or t.strategy.startswith("ddp")):
        from corekit.train.checkpoint import AtomicCheckpointIO

        kwargs["plugins"] = [AtomicCheckpointIO()]  # atomic on any filesystem, with a checksum
    if log_dir is not None:
        from lightning.pytorch.loggers import CSVLogger

        # a version per session
        kwargs["logger"] = CSVLogger(log_dir, name="logs", flush_logs_every_n_steps=t.log_every)
    else:
        kwargs["logger"] = False
    kwargs.update(overrides)
    return L.Trainer(**kwargs)
