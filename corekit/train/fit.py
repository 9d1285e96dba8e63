"""``corekit train``: the tokenizer and data stages, then a Lightning ``Trainer.fit``.

The run directory receives Lightning checkpoints (``checkpoints/``, ``last.ckpt`` for
``--resume``), ``metrics.csv`` (merged from Lightning's CSVLogger, one log per session, see
:mod:`corekit.train.curves`), ``curves.png`` (redrawn after each validation) and, at the end,
the final weights as ``model.safetensors``. Checkpoints are loaded with ``weights_only=True``: nothing pickled runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from corekit.errors import CorekitError
from corekit.rundir import RunDir, ensure_tokenizer, prepare_data
from corekit.train.trainer import make_trainer


@dataclass
class TrainResult:
    """What a training run produced."""

    weights: Path
    metrics: dict[str, float]
    steps: int


def _resume_from(run: RunDir, resume: bool) -> Path | None:
    ckpt_dir = run.path / "checkpoints"
    existing = sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
    if not resume:
        if existing:
            raise CorekitError(
                f"{ckpt_dir} already holds checkpoints; pass --resume to continue that run, "
                "or use another --run-dir to start afresh (nothing was changed)"
            )
        return None
    if not existing:
        raise CorekitError(f"--resume: {ckpt_dir} holds no checkpoints; train without --resume first")
    from corekit.train.checkpoint import clean_partial_saves, newest_checkpoint

    clean_partial_saves(ckpt_dir)
    chosen, skipped = newest_checkpoint(ckpt_dir)
    for candidate in skipped:
        print(f"note: --resume passes over {candidate.path.name}: {candidate.problem}", file=sys.stderr)
    return chosen


def _sample_prompt(data_dir: Path, context_length: int, length: int = 16) -> list[int]:
    """The first tokens of the first validation window: a prompt the corpus itself offers."""
    from corekit.data.windows import ShardSet, ValWindows

    inputs, _ = ValWindows(ShardSet(data_dir, "val", check_hash=False), context_length, 1)[0]
    return inputs[: min(length, context_length // 2)].tolist()


def _world_size(t) -> int:
    """Processes the run trains on (devices x nodes), as far as the spec says."""
    if isinstance(t.devices, int):
        return t.devices * t.num_nodes
    return max(1, torch.cuda.device_count()) * t.num_nodes if torch.cuda.is_available() else t.num_nodes


def _datamodule(spec, data_dir: Path):
    from corekit.data.datamodule import TokenDataModule

    t = spec.train
    return TokenDataModule(
        data_dir, spec.model.context_length, t.batch_size, seed=t.seed, num_workers=t.num_workers,
        train_samples=t.max_steps * t.batch_size * t.accumulate * _world_size(t), val_windows=spec.data.val_windows,
        accumulate=t.accumulate,
    )


def with_steps(spec, steps: int):
    """``spec`` with ``train.max_steps = steps``: the LR schedule then spans those steps, its
    warmup scaled by the same factor so the schedule keeps its shape (a 60-step warmup of a
    600-step run becomes 10 steps of a 100-step recovery)."""
    t = spec.train
    update: dict = {"max_steps": steps}
    warmup = getattr(t.scheduler, "warmup_steps", None)
    if isinstance(warmup, int) and warmup > 0:
        scaled = min(round(warmup * steps / t.max_steps), steps - 1)
        update["scheduler"] = t.scheduler.model_copy(update={"warmup_steps": max(scaled, 0)})
    return spec.model_copy(update={"train": t.model_copy(update=update)})


def fit_steps(task, data_dir: Path, work_dir: Path, *, progress: bool = True) -> dict[str, float]:
    """Train ``task`` (a :class:`~corekit.train.module.LanguageModelTask` or subclass) for its
    spec's ``train.max_steps`` on the token shards in ``data_dir``, with the spec's hardware,
    precision and strategy settings, no validation and no checkpoints, logging into ``work_dir``:
    the short trainings that compressors run (recovery fine-tuning, distillation). Returns the
    last logged metrics."""
    import lightning as L

    spec = task.spec
    L.seed_everything(spec.train.seed, workers=True, verbose=False)
    trainer = make_trainer(spec, task.registry, root_dir=work_dir, log_dir=work_dir, progress=progress,
                           limit_val_batches=0)
    trainer.fit(task, datamodule=_datamodule(spec, data_dir))
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def train(
    spec,
    run: RunDir,
    registry,
    *,
    resume: bool = False,
    workers: int | None = None,
    progress: bool = True,
    trainer_kwargs: dict[str, Any] | None = None,
) -> TrainResult:
    """Train the spec's model in ``run`` (holding its write lock); returns the final weights path
    and metrics."""
    from corekit.lock import writing

    with writing(run.path):
        return _train(spec, run, registry, resume=resume, workers=workers, progress=progress,
                      trainer_kwargs=trainer_kwargs)


def _train(spec, run: RunDir, registry, *, resume: bool, workers: int | None, progress: bool,
           trainer_kwargs: dict[str, Any] | None) -> TrainResult:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from corekit.assemble import build_model
    from corekit.train.curves import CurvesCallback, refresh
    from corekit.train.module import LanguageModelTask
    from corekit.train.samples import SampleCallback
    from corekit.weights import save_weights

    if spec.changes:
        from corekit.spec import change_kind

        made = ", ".join(f"{kind} {params.name}" for kind, params in map(change_kind, spec.changes))
        raise CorekitError(
            f"this spec describes a run whose model a later stage changed ({made}); training it from scratch "
            "would not give that model. Train the original spec, then compress (corekit compress) or fine-tune "
            "(corekit finetune) the trained run"
        )
    ckpt_path = _resume_from(run, resume)  # before any stage writes: a refusal changes nothing
    tokenizer, _ = ensure_tokenizer(spec, run, registry)
    prepare_data(spec, run, tokenizer, workers=workers)

    t = spec.train
    L.seed_everything(t.seed, workers=True, verbose=False)
    model = build_model(spec, registry)
    task = LanguageModelTask(model, spec, registry)
    data = _datamodule(spec, run.data)
    callbacks = [
        # no "-v1" names: a resumed (or moved) run saves step=N.ckpt and last.ckpt over its own files
        ModelCheckpoint(dirpath=run.path / "checkpoints", filename="{step}", save_last=True, save_top_k=-1,
                        enable_version_counter=False,
                        every_n_train_steps=t.checkpoint_every),
        CurvesCallback(run.path),
        SampleCallback(tokenizer, _sample_prompt(run.data, spec.model.context_length), run.path / "samples.txt",
                       seed=t.seed),
    ]
    trainer = make_trainer(
        spec, registry, root_dir=run.path, log_dir=run.path, progress=progress, callbacks=callbacks,
        val_check_interval=t.eval_every * t.accumulate, check_val_every_n_epoch=None, **(trainer_kwargs or {}),
    )
    trainer.fit(task, datamodule=data, ckpt_path=ckpt_path)
    trainer.validate(task, datamodule=data, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        refresh(trainer, run.path)
    weights = run.path / "model.safetensors"
    if trainer.is_global_zero:
        save_weights(model, spec, registry, weights)
    return TrainResult(weights, metrics, trainer.global_step)
