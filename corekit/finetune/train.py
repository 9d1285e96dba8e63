"""The fine-tuning job: measure, train with Lightning, measure, write the new run atomically;
and folding an adapter run's weights into a plain run (``--merge``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

from corekit.errors import CorekitError
from corekit.finetune.run import (
    FORMAT,
    REPORT,
    Prepared,
    Setup,
    build_model,
    count,
    finetune_changes,
    load_finetune_spec,
    prepare,
)
from corekit.io import (
    atomic_write_text,
    check_replaceable,
    file_sha256,
    staged_dir,
)


def _loaders(p: Prepared, ft):
    import torch
    from torch.utils.data import DataLoader

    from corekit.finetune import tasks

    collate = {"classify": tasks.collate_classify, "instruct": tasks.collate_lm,
               "preference": tasks.collate_preference}[ft.task]
    t = p.spec.train
    generator = torch.Generator().manual_seed(t.seed)
    train = DataLoader(tasks.Examples(p.train), batch_size=t.batch_size, shuffle=True, collate_fn=collate,
                       generator=generator, num_workers=t.num_workers)
    val = DataLoader(tasks.Examples(p.val), batch_size=t.batch_size, collate_fn=collate, num_workers=t.num_workers)
    return train, val


def _task(p: Prepared, setup: Setup, registry, reference):
    from corekit.finetune import tasks

    ft = p.spec.finetune
    if ft.task == "classify":
        task = tasks.ClassifyTask(setup.model, p.spec, registry, ft.pooling)
    elif ft.task == "instruct":
        task = tasks.InstructTask(setup.model, p.spec, registry)
    else:
        task = tasks.PreferenceTask(setup.model, p.spec, registry, ft.beta, reference=reference, adapter=setup.adapter)
    task.no_decay = setup.no_decay
    return task


def reference_model(setup: Setup):
    """DPO's frozen reference: None when it is the model with its adapter off (nothing else
    trains), else a frozen copy of the model as it starts."""
    import copy

    if setup.adapter is not None and not setup.partial and not setup.extra_keys:
        return None
    return copy.deepcopy(setup.model).eval().requires_grad_(False)


def measure(p: Prepared, setup: Setup, reference=None) -> dict[str, Any]:
    """The task's figures for the model as it is now (see :mod:`corekit.finetune.evaluate`)."""
    from corekit.finetune import evaluate as ev

    ft, model = p.spec.finetune, setup.model
    if ft.task == "classify":
        return ev.evaluate_classify(model, p.val, p.labels, ft.pooling)
    if ft.task == "instruct":
        return ev.evaluate_instruct(model, p.tokenizer, p.template, p.val, p.held_out, ft.max_new_tokens)
    return ev.evaluate_preference(model, p.val, ft.beta, reference, setup.adapter)


def _fit(
    p: Prepared, setup: Setup, registry, work: Path, progress: bool, reference=None
) -> tuple[dict[str, float], int]:
    import lightning as L

    from corekit.train.curves import refresh
    from corekit.train.trainer import make_trainer

    t = p.spec.train
    L.seed_everything(t.seed, workers=True, verbose=False)
    train, val = _loaders(p, p.spec.finetune)
    task = _task(p, setup, registry, reference)
    setup.model.train()  # measuring left it in eval mode
    epochs = -(-t.max_steps * t.accumulate // max(len(train), 1))  # for the progress bar's "epoch k/n"
    trainer = make_trainer(
        p.spec, registry, root_dir=work, log_dir=work, progress=progress, max_epochs=epochs,
        val_check_interval=min(t.eval_every, t.max_steps) * t.accumulate, check_val_every_n_epoch=None,
        log_every_n_steps=max(1, min(t.log_every, t.max_steps, len(train))),
    )
    trainer.fit(task, train_dataloaders=train, val_dataloaders=val)
    refresh(trainer, work)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}, trainer.global_step


def finetune(
    spec_file: str | Path,
    out: str | Path | None = None,
    *,
    overrides: Iterable[str] = (),
    merge: bool | None = None,
    registry=None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune the base run a ``[finetune]`` spec names into the run directory ``out``
    (default ``runs/<spec file stem>``).

    Args:
        merge: fold the adapter into the weights at the end (default: the spec's ``finetune.merge``).
        progress: show Lightning's progress bar (with tokens/s).

    Returns:
        The report, as written to ``out/finetune-report.json``.

    Raises:
        CorekitError: a bad spec, base run or data file (named with its line), or a taken ``out``;
            nothing is written then.
    """
    import torch

    from corekit.finetune.adapter import ADAPTER_FILE
    from corekit.io import record_checksum
    from corekit.plugins import get_registry
    from corekit.run import Run
    from corekit.rundir import RunDir
    from corekit.spec import with_changes
    from corekit.weights import save_weights

    say = say or (lambda message: None)
    registry = registry or get_registry()
    spec, base, base_spec = load_finetune_spec(spec_file, overrides, registry)
    ft = spec.finetune
    if merge is not None:
        ft.merge = merge
    if ft.merge and ft.adapter is None:
        raise CorekitError("--merge folds an adapter into the weights, but finetune.adapter is not set (full "
                           "fine-tuning already gives a plain model)")
    out = Path(out) if out is not None else RunDir.for_spec(spec_file).path
    if out.exists() and out.resolve() == base.path.resolve():
        raise CorekitError(f"the output {out} is the base run; give another --run-dir")
    check_replaceable(out, REPORT, "a fine-tuned run")
    p = prepare(spec, base, base_spec, registry)  # data errors surface before any training
    torch.manual_seed(spec.train.seed)
    setup = build_model(p, registry)
    trainable, total = count(setup)
    say(f"{ft.task}: {len(p.train)} train / {len(p.val)} val examples; training {trainable:,} of {total:,} parameters")
    reference = reference_model(setup) if ft.task == "preference" else None
    before = measure(p, setup, reference)

    with staged_dir(out) as tmp:
        train_metrics, steps = _fit(p, setup, registry, tmp, progress, reference)
        model = setup.model.eval()
        after = measure(p, setup, reference)
        if ft.merge:
            model = setup.adapter.merge(model)
        spec = with_changes(spec, registry, *finetune_changes(p, merged=ft.merge))
        RunDir(tmp).derive(spec, base)
        weights = tmp / "model.safetensors"
        sizes: dict[str, int] = {}
        if ft.adapter is not None and not ft.merge:
            # The adapter file: the adapter's tensors, a classifier head, and the new tokens' rows;
            # model.safetensors: the frozen weights under them (the base run's own file when it is that).
            adapter_keys = set(setup.adapter.state(model)) | setup.extra_keys
            save_weights(model, spec, registry, tmp / ADAPTER_FILE, only=adapter_keys, rows=setup.new_rows)
            sizes["adapter_bytes"] = (tmp / ADAPTER_FILE).stat().st_size
            if Run(base, base_spec, registry).is_plain:
                link_file(base.path / "model.safetensors", weights)
                record_checksum(weights)  # the base's file, checked when the base was opened
            else:  # the base's own adapter is folded into these frozen weights
                save_weights(model, spec, registry, weights, exclude=adapter_keys)
        else:
            save_weights(model, spec, registry, weights)
        sizes["weights_bytes"] = weights.stat().st_size
        sizes["base_weights_bytes"] = (base.path / "model.safetensors").stat().st_size
        _check_reload(model, spec, weights, registry, _probe_ids(p.tokenizer.vocab_size, p.new_ids))
        report: dict[str, Any] = {
            "format": FORMAT, "task": ft.task,
            "base": {"run": str(base.path), "weights_sha256": file_sha256(base.path / "model.safetensors")},
            "method": ft.adapter.name if ft.adapter is not None else "full", "merged": ft.merge,
            "parameters": {"trainable": trainable, "total": total}, "steps": steps,
            "examples": {"train": len(p.train), "val": len(p.val), "dropped_too_long": p.dropped},
            "before": before, "after": after, "train": train_metrics, "files": sizes,
        }
        if ft.task == "classify":
            from corekit.finetune.metrics import save_confusion_png

            save_confusion_png(after["confusion"], p.labels, tmp / "confusion.png", accuracy=after["accuracy"])
        atomic_write_text(tmp / REPORT, json.dumps(report, indent=2) + "\n")
        shutil.rmtree(tmp / "logs", ignore_errors=True)
    report["out"] = str(out)
    return report


def link_file(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (a copy where links are not possible)."""
    import os

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _check_reload(model, spec, weights: Path, registry, ids: list[int]) -> None:
    """The saved run must load back into the model just made (what eval/generate will see),
    checked on ``ids`` (which should include any new tokens' ids)."""
    import torch

    from corekit.run import load_run_model

    probe = torch.tensor([ids])
    reloaded = load_run_model(spec, weights, registry).eval()
    with torch.no_grad():
        diff = (reloaded(probe) - model.eval()(probe)).abs().max().item()
    if diff > 1e-4:
        raise CorekitError(f"internal error: the saved fine-tuned run does not reproduce the trained model "
                           f"(max logit difference {diff:.3g}); nothing was written")


def _probe_ids(vocab_size: int, new_ids: tuple[int, int] | None) -> list[int]:
    ids = [i % vocab_size for i in range(1, 9)]
    return ids + (list(range(*new_ids)) if new_ids else [])


def merge_run(run_dir: str | Path, out: str | Path | None = None, registry=None) -> Path:
    """Fold the adapter of a run fine-tuned with one into its weights: a plain run at ``out``
    (default ``RUN-merged``) that export and compressors take like any other."""
    from corekit.rundir import RunDir
    from corekit.run import Run
    from corekit.weights import save_weights

    run = Run.open(run_dir, registry)
    registry, tokenizer = run.registry, run.tokenizer
    if run.is_plain:
        raise CorekitError(f"{run.path} has no unmerged adapter to fold in (it is already a plain run)")
    out = Path(out) if out is not None else run.path.with_name(run.path.name + "-merged")
    if out.exists() and out.resolve() == run.path.resolve():
        raise CorekitError(f"--run-dir {out} is the run being merged; give a new directory")
    check_replaceable(out, REPORT, "a fine-tuned run")
    model, spec = run.plain_model().eval(), run.plain_spec
    with staged_dir(out) as tmp:
        RunDir(tmp).derive(spec, run.dir)
        save_weights(model, spec, registry, tmp / "model.safetensors")
        _check_reload(model, spec, tmp / "model.safetensors", registry,
                      _probe_ids(tokenizer.vocab_size, None) + list(tokenizer.special_tokens.values()))
        report = json.loads((run.path / REPORT).read_text(encoding="utf-8")) if (run.path / REPORT).is_file() else {}
        report.update({"format": FORMAT, "merged": True, "merged_from": str(run.path)})
        report.setdefault("files", {}).update(weights_bytes=(tmp / "model.safetensors").stat().st_size)
        report["files"].pop("adapter_bytes", None)
        atomic_write_text(tmp / REPORT, json.dumps(report, indent=2) + "\n")
        for extra in ("confusion.png", "metrics.csv", "curves.png"):
            if (run.path / extra).is_file():
                shutil.copy2(run.path / extra, tmp / extra)
    return out
