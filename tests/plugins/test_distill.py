"""The ``distill`` compressor: the KD loss against a hand computation, the frozen teacher, the
student spec and its refusals, and a distilled student that beats the same student trained
from scratch on the embedded corpus."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import model_section, run_cli, tiny_model

from corekit.compress.base import SourceRun
from corekit.compress.run import compress_run, compressor_params
from corekit.errors import CorekitError, SpecError
from corekit.rundir import RunDir
from corekit.spec import load_spec, spec_to_dict
from corekit_plugins.compressors.distill import DistillTask, distillation_loss, merge_model


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These models are tiny: one intra-op thread is as fast as two, and on a shared 2-core
    machine two threads per process oversubscribe the cores (about 10x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def distill(registry, **fields):
    return compressor_params("distill", [], registry, fields=fields)


# --------------------------------------------------------------------------- the loss
def _softmax(row: list[float], temperature: float) -> list[float]:
    exps = [math.exp(x / temperature) for x in row]
    return [e / sum(exps) for e in exps]


def test_kd_loss_equals_a_hand_computed_value():
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]  # two positions, V = 3
    teacher = [[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    targets = [1, 2]
    alpha, T = 0.3, 2.0
    kls = []
    for s, t in zip(student, teacher):
        p, q = _softmax(t, T), _softmax(s, T)
        kls.append(sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q)))
    kd = sum(kls) / len(kls)
    ce = sum(-math.log(_softmax(s, 1.0)[y]) for s, y in zip(student, targets)) / len(targets)
    expected = alpha * T * T * kd + (1 - alpha) * ce

    out = distillation_loss(torch.tensor([student]), torch.tensor([teacher]), torch.tensor([targets]),
                            alpha=alpha, temperature=T)
    assert out.kd.item() == pytest.approx(kd, rel=1e-6)
    assert out.ce.item() == pytest.approx(ce, rel=1e-6)
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.52740, abs=1e-5)  # kd 0.28485, ce 0.26513


def test_alpha_zero_is_plain_cross_entropy_and_alpha_one_the_scaled_kl():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    ce = F.cross_entropy(student.flatten(0, 1), targets.flatten())
    assert torch.equal(distillation_loss(student, teacher, targets, alpha=0.0, temperature=3.0).loss, ce)
    out = distillation_loss(student, teacher, targets, alpha=1.0, temperature=3.0)
    torch.testing.assert_close(out.loss, 9.0 * out.kd)
    assert distillation_loss(student, student, targets, alpha=1.0, temperature=3.0).loss.abs().item() < 1e-6
    with pytest.raises(ValueError, match="vocabularies must match"):
        distillation_loss(student, teacher[..., :6], targets, alpha=0.5, temperature=1.0)


# --------------------------------------------------------------------------- the task
class _Watch(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[bool, bool]] = []

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx) -> None:
        teacher = task.teacher
        self.seen.append((teacher.training, any(p.grad is not None for p in teacher.parameters())))


def test_the_teacher_stays_frozen_in_eval_mode_and_outside_checkpoints(registry):
    spec = load_spec({"model": model_section(n_layers=1, d_model=16, norm="rmsnorm", mlp={"activation": "relu"},
                                             attention={"name": "mha", "n_heads": 2}),
                      "train": {"max_steps": 4, "optimizer": {"name": "adamw", "lr": 1e-2},
                                "scheduler": {"name": "constant"}}}, registry=registry)
    teacher = tiny_model(registry, seed=1, dropout=0.5).train()  # dropout: train mode would show
    student = tiny_model(registry, seed=2, n_layers=1, d_model=16, norm="rmsnorm", mlp={"activation": "relu"},
                         attention={"name": "mha", "n_heads": 2}).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    task = DistillTask(student, teacher, spec, registry, alpha=0.7, temperature=2.0)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    torch.manual_seed(0)
    batch = torch.randint(0, 64, (16, 9))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(batch[:, :-1], batch[:, 1:]), batch_size=4)
    watch = _Watch()
    L.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[watch]).fit(task, loader)

    assert watch.seen == [(False, False)] * 4
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert any(not torch.equal(v, student_before[k]) for k, v in student.state_dict().items())
    assert all(k.startswith(("model.", "val_loss")) for k in task.state_dict())  # no teacher in checkpoints
    optimized = {id(p) for group in task.trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized.isdisjoint(id(p) for p in teacher.parameters())
    assert {"kd_loss", "ce_loss", "train_loss"} <= set(task.trainer.callback_metrics)
    # validation keeps the plain cross-entropy, so val_loss means what it means elsewhere
    inputs, targets = batch[:, :-1], batch[:, 1:]
    with torch.no_grad():
        torch.testing.assert_close(task.loss((inputs, targets)),
                                   F.cross_entropy(student(inputs).flatten(0, 1), targets.flatten()))


# --------------------------------------------------------------------------- the student spec
def fake_run(registry, path, *, data: bool = False, **model) -> SourceRun:
    """A run directory with spec, tokenizer and random weights (no training), as compress reads it."""
    from corekit.assemble import build_model
    from corekit.weights import save_weights

    spec = load_spec({"model": model_section(**model), "tokenizer": {"name": "bytes"}}, registry=registry)
    run = RunDir(path)
    path.mkdir(parents=True)
    run.write_spec(spec)
    tokenizer = registry.build("tokenizer", spec.tokenizer).train(())
    tokenizer.save(run.tokenizer)
    save_weights(build_model(spec, registry), spec, registry, path / "model.safetensors")
    if data:
        run.data.mkdir()
        (run.data / "manifest.json").write_text("{}")
    return SourceRun(run, spec, registry, tokenizer)


def student_spec(registry, source, **fields):
    return registry.build("compressor", distill(registry, **fields))._student_spec(source)


def test_the_student_starts_from_the_teacher_with_overrides_merged(registry, tmp_path):
    source = fake_run(registry, tmp_path / "run", norm={"name": "rmsnorm", "eps": 1e-5})
    spec = student_spec(registry, source, student={"n_layers": 1, "d_model": 16, "norm": "layernorm",
                                                   "attention": {"n_heads": 2}, "position": {"name": "rope"}},
                        steps=7, lr=2e-3)
    m, t = spec.model, source.spec.model
    assert (m.n_layers, m.d_model, m.attention.n_heads, m.norm.name, m.position.name) == (1, 16, 2, "layernorm", "rope")
    assert m.attention.name == t.attention.name and m.mlp.activation == t.mlp.activation  # merged, not replaced
    assert m.mlp.hidden_dim == 64  # the default 4 * d_model of the student, not the teacher's 128
    assert (m.vocab_size, m.context_length) == (t.vocab_size, t.context_length) == (257, 32)
    assert (spec.train.max_steps, spec.train.optimizer.lr) == (7, 2e-3)
    assert spec.tokenizer == source.spec.tokenizer and spec.data == source.spec.data
    # defaults: the teacher's steps and learning rate
    spec = student_spec(registry, source, student={"n_layers": 1})
    assert spec.train == source.spec.train and spec.model.mlp.hidden_dim == t.mlp.hidden_dim


def test_overrides_merge_into_tables_and_another_component_replaces_its_table():
    base = {"n_layers": 4, "norm": "rmsnorm", "attention": {"name": "mha", "n_heads": 4},
            "position": {"name": "rope", "theta": 500.0}}
    merged = merge_model(base, {"n_layers": 1, "norm": {"eps": 1e-5}, "attention": {"n_heads": 2},
                                "position": {"name": "learned"}})
    assert merged == {"n_layers": 1, "norm": {"name": "rmsnorm", "eps": 1e-5},
                      "attention": {"name": "mha", "n_heads": 2},
                      "position": {"name": "learned"}}  # rope's theta would be an unknown field of learned
    assert base["attention"]["n_heads"] == 4  # the teacher's table is left alone


@pytest.mark.parametrize("field, value", [("vocab_size", 300), ("context_length", 16)])
def test_a_student_that_cannot_share_the_teachers_tokens_is_refused(registry, tmp_path, field, value):
    source = fake_run(registry, tmp_path / "run", data=True)
    with pytest.raises(CorekitError, match=rf"model\.{field}={value} differs from the teacher's"):
        registry.build("compressor", distill(registry, student={field: value})).check(source)


def test_an_invalid_student_names_the_field(registry, tmp_path):
    source = fake_run(registry, tmp_path / "run", data=True)
    compressor = registry.build("compressor", distill(registry, student={"attention": {"n_heads": 3}}))
    with pytest.raises(SpecError, match=r"(?s)distill student.*model\.attention\.n_heads: n_heads=3 must divide"):
        compressor.check(source)


def test_a_student_spec_file_is_the_starting_point_and_its_tokenizer_is_checked(registry, tmp_path):
    source = fake_run(registry, tmp_path / "run", data=True)
    good = tmp_path / "student.toml"
    good.write_text('[model]\nd_model = 16\nn_layers = 1\n[model.attention]\nname = "gqa"\nn_heads = 4\n'
                    'n_kv_heads = 1\n[tokenizer]\nname = "bytes"\n')
    spec = student_spec(registry, source, spec=str(good), student={"n_layers": 2})
    assert (spec.model.d_model, spec.model.n_layers, spec.model.attention.name) == (16, 2, "gqa")
    assert (spec.model.context_length, spec.model.vocab_size) == (32, 257)  # the teacher's, not the file's defaults
    with pytest.raises(SpecError, match="nowhere.toml does not exist"):
        student_spec(registry, source, spec=str(tmp_path / "nowhere.toml"))
    no_model = tmp_path / "tokenizer-only.toml"
    no_model.write_text('[tokenizer]\nname = "bytes"\n')
    with pytest.raises(CorekitError, match="tokenizer-only.toml has no \\[model\\] table"):
        student_spec(registry, source, spec=str(no_model))
    bpe = tmp_path / "bpe.toml"
    bpe.write_text('[model]\n[model.attention]\nn_heads = 4\n[tokenizer]\nname = "bpe"\nvocab_size = 512\n')
    with pytest.raises(CorekitError, match="uses tokenizer .*'bpe'.* trained with tokenizer .*'bytes'"):
        registry.build("compressor", distill(registry, spec=str(bpe))).check(source)


def test_the_cli_refuses_another_tokenizer_clearly_and_writes_nothing(capsys, registry, tmp_path):
    source = fake_run(registry, tmp_path / "run", data=True)
    student = tmp_path / "student.toml"
    student.write_text('[model]\nn_layers = 1\n[model.attention]\nn_heads = 4\n[tokenizer]\nname = "char"\n')
    out = tmp_path / "out" / "small"
    code, _, err = run_cli(capsys, "compress", str(source.run.path), "--with", "distill", "--set",
                           f'spec="{student}"', "--out", str(out), "--no-speed")
    assert code == 2, err
    assert "'char'" in err and "'bytes'" in err and "tokenizer" in err and "Traceback" not in err
    assert not out.exists() and not out.parent.exists()


def test_distill_needs_the_runs_data_and_float_weights(registry, tmp_path):
    out = tmp_path / "out"
    source = fake_run(registry, tmp_path / "run")
    with pytest.raises(CorekitError, match="holds no prepared data"):
        compress_run(source.run.path, distill(registry), out, registry=registry, measure_speed=False)
    assert not out.exists()
    source = fake_run(registry, tmp_path / "q", data=True)
    quantize = [{"compressor": {"name": "quantize"}}]
    spec = load_spec({**spec_to_dict(source.spec), "changes": quantize}, registry=registry)
    quantized = SourceRun(source.run, spec, registry, source.tokenizer)
    with pytest.raises(CorekitError, match="already quantized"):
        registry.build("compressor", distill(registry)).check(quantized)


# --------------------------------------------------------------------------- a real teacher
TEACHER = """\
[model]
context_length = 64
d_model = 64
n_layers = 3
[model.attention]
name = "mha"
n_heads = 4
[model.norm]
name = "rmsnorm"
[model.mlp]
activation = "gelu"
[model.position]
name = "rope"
[tokenizer]
name = "bytes"
[data]
source = "python-stdlib"
max_documents = 40
val_windows = 32
[train]
max_steps = 1000
batch_size = 8
seed = {seed}
eval_every = 1000
checkpoint_every = 1000
log_every = 100
[train.optimizer]
name = "adamw"
lr = 5e-3
"""
#: narrower, shallower, fewer heads and another norm than the teacher
STUDENT = {"n_layers": 2, "d_model": 32, "attention": {"n_heads": 2}, "norm": {"name": "layernorm"}}
STEPS = 300


@pytest.fixture(scope="module")
def stdlib_teacher(tmp_path_factory):
    """A 3-layer teacher trained for 1000 steps on the embedded corpus (val loss about 1.9)."""
    from corekit.cli.main import main

    root = tmp_path_factory.mktemp("teacher")
    (root / "teacher.toml").write_text(TEACHER.format(seed=1337))
    run = root / "run"
    try:
        main(["train", str(root / "teacher.toml"), "--run-dir", str(run), "-j", "1"])
    except SystemExit as exc:
        if exc.code:
            raise RuntimeError(f"training the teacher failed with exit code {exc.code}") from None
    return run


@pytest.mark.slow
def test_a_distilled_student_beats_the_same_student_trained_from_scratch(registry, stdlib_teacher, tmp_path):
    from corekit.assemble import build_model
    from corekit.run import load_run_model
    from corekit.train.evaluate import validation_loss
    from corekit.train.fit import fit_steps
    from corekit.train.module import LanguageModelTask

    out = tmp_path / "student"
    params = distill(registry, student=STUDENT, steps=STEPS, alpha=0.8, temperature=1.0)
    report = compress_run(stdlib_teacher, params, out, registry=registry, measure_speed=False)
    spec = load_spec(out / "spec.toml", registry=registry)
    assert (spec.model.n_layers, spec.model.d_model, spec.model.norm.name) == (2, 32, "layernorm")
    assert [c.name for c in spec.change_params("compressor")] == ["distill"] and spec.train.max_steps == STEPS
    assert report["after"]["parameters"] < report["before"]["parameters"] / 3
    assert {"final_kd_loss", "final_ce_loss"} <= set(report["details"])
    distilled = load_run_model(spec, out / "model.safetensors", registry)

    # The same student spec, seed, steps, schedule and data, trained on the labels alone.
    scratch_spec = spec.model_copy(update={"changes": []})
    torch.manual_seed(scratch_spec.train.seed)
    scratch = build_model(scratch_spec, registry).train()
    fit_steps(LanguageModelTask(scratch, scratch_spec, registry), stdlib_teacher / "data", tmp_path / "work",
              progress=False)

    data, ctx = stdlib_teacher / "data", spec.model.context_length
    losses = {name: validation_loss(model, data, ctx, max_windows=128)
              for name, model in [("distilled", distilled), ("scratch", scratch)]}
    print(f"val loss after {STEPS} steps: {losses}, teacher {report['before']['val_loss']:.3f}")
    # Margins seen in development: 0.08-0.15 nats over 6 student seeds; 0.03 leaves room for noise.
    assert losses["scratch"] - losses["distilled"] > 0.03, losses
