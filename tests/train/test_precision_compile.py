"""The ``[train]`` options that change how the same model trains: precision and torch.compile."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from helpers import model_section, run_cli, tiny_model

from corekit.spec import load_spec
from corekit.train.trainer import trainer_settings
from corekit.train.module import LanguageModelTask


def _spec(registry, **train):
    train = {"max_steps": 40, "grad_clip": 1.0, "optimizer": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.0},
             "scheduler": {"name": "constant", "warmup_steps": 0}, **train}
    return load_spec({"model": model_section(), "train": train}, registry=registry)


class LossLog(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _fit(task: LanguageModelTask, batches, steps: int) -> list[float]:
    log = LossLog()
    settings = trainer_settings(task.spec.train) | {"max_steps": steps}
    trainer = L.Trainer(**settings, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[log])
    trainer.fit(task, torch.utils.data.DataLoader(batches, batch_size=None))
    return log.losses


def _fixed_batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 64, (4, 17), generator=gen)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def test_fused_optimizer_with_clipping_under_mixed_precision_is_a_spec_error(registry):
    from corekit.errors import SpecError

    with pytest.raises(SpecError, match=r"train\.optimizer\.fused.*grad_clip"):
        _spec(registry, precision="bf16-mixed", optimizer={"name": "adamw", "fused": True})
    # no clipping: fine
    _spec(registry, precision="bf16-mixed", grad_clip=0.0, optimizer={"name": "adamw", "fused": True})
    _spec(registry, precision="32", optimizer={"name": "adamw", "fused": True})  # fp32: fine


def test_trainer_settings_follow_the_train_section(registry):
    spec = _spec(registry, precision="bf16-mixed", strategy="ddp", devices=3, num_nodes=2, accumulate=4,
                 grad_clip=0.0, max_steps=17)
    settings = trainer_settings(spec.train)
    assert settings["precision"] == "bf16-mixed" and settings["strategy"] == "ddp"
    assert settings["devices"] == 3 and settings["num_nodes"] == 2
    assert settings["accumulate_grad_batches"] == 4 and settings["max_steps"] == 17
    assert settings["gradient_clip_val"] is None  # 0 turns clipping off
    assert settings["deterministic"] is (not torch.cuda.is_available())
    assert trainer_settings(_spec(registry, grad_clip=0.5).train)["gradient_clip_val"] == 0.5


# Lightning has no float16 autocast on CPU: there, "16-mixed" falls back to bfloat16 (with a warning).
HALF = torch.float16 if torch.cuda.is_available() else torch.bfloat16


@pytest.mark.filterwarnings("ignore:.*precision='16-mixed'.*")
@pytest.mark.parametrize("precision, dtype", [("bf16-mixed", torch.bfloat16), ("16-mixed", HALF)])
def test_mixed_precision_computes_in_the_low_dtype_and_learns(registry, precision, dtype):
    spec = _spec(registry, precision=precision)
    model = tiny_model(registry)
    task = LanguageModelTask(model, spec, registry)
    batch = _fixed_batch()
    before = task.loss(batch).item()
    seen: list[torch.dtype] = []
    hook = model.blocks[0].mlp.up.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    losses = _fit(task, [batch] * 40, 40)
    hook.remove()
    assert set(seen) == {dtype}  # autocast ran the linear layers in the low dtype
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32
    assert len(losses) == 40 and all(torch.isfinite(torch.tensor(losses)))
    assert task.loss(batch).item() < 0.5 * before


def test_gradients_are_freed_right_after_each_optimizer_step(registry):
    spec = _spec(registry, accumulate=2)
    model = tiny_model(registry)
    grads_at_forward: list[bool] = []
    model.register_forward_pre_hook(lambda m, args: grads_at_forward.append(m.lm_head.weight.grad is not None))
    _fit(LanguageModelTask(model, spec, registry), [_fixed_batch(i) for i in range(6)], 3)
    # Micro-batches 1, 3, 5 start a step (no gradients held); 2, 4, 6 accumulate onto 1, 3, 5.
    assert grads_at_forward == [False, True] * 3
    assert all(p.grad is None for p in model.parameters())


def test_fp32_precision_keeps_float32_activations(registry):
    spec = _spec(registry, precision="32")
    model = tiny_model(registry)
    seen: list[torch.dtype] = []
    model.blocks[0].mlp.up.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    _fit(LanguageModelTask(model, spec, registry), [_fixed_batch()] * 2, 2)
    assert set(seen) == {torch.float32}


@pytest.mark.slow
def test_compiled_training_matches_eager_and_keeps_parameter_names(registry):
    torch._dynamo.reset()
    eager_model = tiny_model(registry)
    compiled_model = copy.deepcopy(eager_model)
    batches = [_fixed_batch(seed) for seed in range(4)]
    # SGD, whose step is proportional to the gradient: Adam divides by the root of the second
    # moment, so where a gradient is near zero its step is about lr whatever the gradient's size,
    # and the last-bit differences of compiled kernels become lr-sized weight differences.
    sgd = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0}
    eager = LanguageModelTask(eager_model, _spec(registry, compile=False, optimizer=sgd), registry)
    compiled = LanguageModelTask(compiled_model, _spec(registry, compile=True, optimizer=sgd), registry)
    assert eager.compiled is None and compiled.compiled is not None
    frames_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    eager_losses = _fit(eager, batches, 4)
    compiled_losses = _fit(compiled, batches, 4)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > frames_before  # really compiled
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    start = tiny_model(registry)  # the same seed: the weights both runs started from
    assert not torch.equal(start.blocks[0].mlp.up.weight, compiled_model.blocks[0].mlp.up.weight)  # it trained
    # The compiled forward is not a submodule: a checkpoint of a compiled run has the eager names.
    assert list(compiled.state_dict()) == list(eager.state_dict())
    for (name, a), b in zip(eager_model.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_a_compiled_run_resumes_without_compile(capsys, tmp_path):
    from test_train import write_spec

    spec, run = write_spec(tmp_path, max_steps=3, compile="true"), tmp_path / "run"
    code, out, err = run_cli(capsys, "train", str(spec), "--run-dir", str(run), "-j", "1")
    assert code == 0, err
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert state and all(name.startswith(("model.", "val_loss")) and "_orig_mod" not in name for name in state)
    code, out, err = run_cli(capsys, "train", str(spec), "--run-dir", str(run), "--resume",
                             "--set", "train.compile=false", "--set", "train.max_steps=6")
    assert code == 0, err
    assert "trained 6 steps" in out
    code, out, err = run_cli(capsys, "generate", str(run), "--prompt", "the", "--max-new-tokens", "5")
    assert code == 0, err
