"""One trainer factory: pretraining, fine-tuning and the compressors' short trainings all get the
``[train]`` section's settings, the plugins' callbacks and the same progress output."""

from __future__ import annotations

import io
import types

import lightning as L
import pytest
import torch

from corekit import hookimpl
from corekit.plugins import load_registry
from corekit.spec import load_spec
from corekit.train.trainer import LogLines, make_trainer


class Recorder(L.Callback):
    """Records what each trainer it was handed to was configured with."""

    seen: list[dict] = []

    def on_train_start(self, trainer, pl_module):
        Recorder.seen.append({"max_steps": trainer.max_steps, "precision": trainer.precision,
                              "clip": trainer.gradient_clip_val, "task": type(pl_module).__name__})


def _recording_registry():
    plugin = types.ModuleType("recording_plugin")
    plugin.corekit_trainer_callbacks = hookimpl(lambda spec: [Recorder()])
    return load_registry(autoload=False, plugins=[plugin])


def _tiny_spec(registry, **train):
    return load_spec({"model": {"context_length": 16, "d_model": 16, "n_layers": 1, "attention": {"n_heads": 2}},
                      "train": {"max_steps": 3, "batch_size": 2, "log_every": 1, **train}}, registry=registry)


def test_make_trainer_applies_the_train_section_and_plugin_callbacks(tmp_path):
    registry = _recording_registry()
    spec = _tiny_spec(registry, grad_clip=0.5, accumulate=2)
    trainer = make_trainer(spec, registry, root_dir=tmp_path, log_dir=tmp_path, progress=True)
    assert trainer.max_steps == 3 and trainer.gradient_clip_val == 0.5 and trainer.accumulate_grad_batches == 2
    assert any(isinstance(cb, Recorder) for cb in trainer.callbacks)
    assert any(isinstance(cb, LogLines) for cb in trainer.callbacks)  # stderr is not a terminal under pytest
    assert trainer.logger is not None and trainer.checkpoint_callback is None
    quiet = make_trainer(spec, registry, root_dir=tmp_path, progress=False)
    assert not any(isinstance(cb, LogLines) for cb in quiet.callbacks) and quiet.logger is None


def test_compressor_trainings_get_plugin_callbacks_and_log_lines(tmp_path, trained_run, capsys):
    """fit_steps (pruning recovery, distillation) goes through the factory: the plugin's callback
    runs and progress comes as plain lines."""
    from corekit.run import Run
    from corekit.train.fit import fit_steps, with_steps
    from corekit.train.module import LanguageModelTask

    registry = _recording_registry()
    Recorder.seen.clear()
    run = Run.open(trained_run, registry)
    spec = with_steps(run.spec, 4)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"log_every": 2})})
    fit_steps(LanguageModelTask(run.model(), spec, registry), run.data, tmp_path / "work", progress=True)
    assert Recorder.seen == [{"max_steps": 4, "precision": "32-true", "clip": spec.train.grad_clip,
                              "task": "LanguageModelTask"}]
    err = capsys.readouterr().err
    assert "step 2/4" in err and "step 4/4" in err and "train_loss" in err


def test_finetuning_gets_plugin_callbacks(tmp_path, trained_run):
    from finetune_data import finetune_spec, sorted_digits_csv

    from corekit.finetune.train import finetune

    registry = _recording_registry()
    Recorder.seen.clear()
    data = tmp_path / "digits.csv"
    sorted_digits_csv(data, 64, seed=0)
    spec = finetune_spec(tmp_path / "ft.toml", trained_run, "classify", data, steps=2, batch_size=8)
    finetune(spec, tmp_path / "out", registry=registry, progress=False)
    assert [s["task"] for s in Recorder.seen] == ["ClassifyTask"] and Recorder.seen[0]["max_steps"] == 2


def test_log_lines_print_every_n_steps_and_the_last():
    out = io.StringIO()
    lines = LogLines(every=3, stream=out)
    trainer = types.SimpleNamespace(global_step=0, max_steps=7, is_global_zero=True, sanity_checking=False,
                                    progress_bar_metrics={"train_loss": torch.tensor(2.5)}, callback_metrics={})
    lines.on_train_start(trainer, None)
    for step in range(1, 8):
        trainer.global_step = step
        lines.on_train_batch_end(trainer, None, None, None, step)
        lines.on_train_batch_end(trainer, None, None, None, step)  # accumulation: same step twice
    shown = [line.split(" (")[0] for line in out.getvalue().splitlines()]
    assert shown == ["step 3/7", "step 6/7", "step 7/7"]
    assert "train_loss 2.5" in out.getvalue()


@pytest.mark.parametrize("every", [0, -2])
def test_log_lines_every_is_at_least_one(every):
    assert LogLines(every).every == 1
