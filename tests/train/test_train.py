"""Training with Lightning: the loop learns, the run directory, checkpoints and resume."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import model_section, run_cli, tiny_model, write_spec

from corekit.errors import CorekitError
from corekit.train.module import LanguageModelTask, NonFiniteLossError

def test_a_tiny_model_overfits_a_fixed_batch(registry):
    from corekit.spec import load_spec

    spec = load_spec({"model": model_section(), "train": {
        "max_steps": 150, "optimizer": {"name": "adamw", "lr": 1e-2, "weight_decay": 0.0},
        "scheduler": {"name": "constant", "warmup_steps": 5}}}, registry=registry)
    model = tiny_model(registry)
    torch.manual_seed(0)
    batch = torch.randint(0, 64, (4, 17))
    inputs, targets = batch[:, :-1], batch[:, 1:]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs.repeat(150, 1), targets.repeat(150, 1)),
                                         batch_size=4)
    task = LanguageModelTask(model, spec, registry)
    before = task.loss((inputs, targets)).item()
    L.Trainer(max_steps=150, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(task, loader)
    after = task.loss((inputs, targets)).item()
    assert before > 3.5  # about ln(64) at initialisation
    assert after < 0.05


def test_a_non_finite_loss_stops_training(registry):
    from corekit.spec import load_spec

    spec = load_spec({"model": model_section()}, registry=registry)
    model = tiny_model(registry)
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    task = LanguageModelTask(model, spec, registry)
    batch = torch.randint(0, 64, (2, 8))
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        task.training_step((batch, batch), 0)


@pytest.mark.slow
def test_train_writes_the_run_directory_and_resumes(capsys, tmp_path):
    spec, run = write_spec(tmp_path), tmp_path / "run"
    code, out, err = run_cli(capsys, "train", str(spec), "--run-dir", str(run), "-j", "1")
    assert code == 0, err
    assert "trained 6 steps" in out and "val loss" in out
    for name in ("spec.toml", "tokenizer.json", "data/manifest.json", "metrics.csv", "model.safetensors",
                 "checkpoints/last.ckpt", "checkpoints/step=3.ckpt", "checkpoints/step=6.ckpt", "curves.png",
                 "samples.txt"):
        assert (run / name).is_file(), name
    samples = (run / "samples.txt").read_text()
    assert samples.count("--- step 3\n") == 1 and samples.count("--- step 6\n") == 1  # one per evaluation
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    val = [float(r["val_loss"]) for r in rows if r.get("val_loss")]
    assert len(val) >= 2 and all(v == v for v in val)

    # the final weights are the trained model's: equal to the last checkpoint's state
    from safetensors.torch import load_file

    weights = load_file(str(run / "model.safetensors"))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    for key, value in weights.items():
        torch.testing.assert_close(value, ckpt["state_dict"][f"model.{key}"])

    # generating from the run uses those weights (deterministic, greedy)
    code, first, _ = run_cli(capsys, "generate", str(run), "-p", "the", "-n", "8", "--temperature", "0")
    assert code == 0
    code, random_init, _ = run_cli(capsys, "generate", str(spec), "--run-dir", str(tmp_path / "none"),
                                   "-p", "the", "-n", "8", "--temperature", "0")
    assert first != random_init

    # a second run without --resume refuses and changes nothing
    before = (run / "checkpoints" / "last.ckpt").read_bytes()
    code, _, err = run_cli(capsys, "train", str(spec), "--run-dir", str(run))
    assert code == 2 and "--resume" in err and "Traceback" not in err
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before

    # --resume continues from step 6 to the new max_steps
    code, out, err = run_cli(capsys, "train", str(spec), "--run-dir", str(run), "--resume",
                             "--set", "train.max_steps=9")
    assert code == 0, err
    assert "trained 9 steps" in out
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 9


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_resume_passes_over_a_damaged_checkpoint_and_refuses_when_none_is_left(capsys, tmp_path, damage):
    """A damaged last.ckpt (truncated, replaced, or one flipped byte that only its checksum shows)
    is passed over for the newest good checkpoint; with every checkpoint damaged, --resume is a
    clear error that changes nothing."""
    from helpers import flip_byte

    spec, run = write_spec(tmp_path, max_steps=3), tmp_path / "run"
    assert run_cli(capsys, "train", str(spec), "--run-dir", str(run), "-j", "1")[0] == 0
    ckpts = run / "checkpoints"

    def spoil(path):
        data = path.read_bytes()
        if damage == "flip":
            flip_byte(path, len(data) // 2)
        else:
            path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint" * 100)

    spoil(ckpts / "step=3.ckpt")
    spoil(ckpts / "last.ckpt")
    snapshot = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, _, err = run_cli(capsys, "train", str(spec), "--run-dir", str(run), "--resume", "--set", "train.max_steps=6")
    assert code == 2 and "Traceback" not in err and "no checkpoint" in err
    assert "last.ckpt" in " ".join(err.split()) and "step=3.ckpt" in " ".join(err.split())
    assert ("sha256" if damage == "flip" else "unreadable") in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == snapshot


@pytest.mark.slow
def test_resume_takes_the_highest_step_inside_not_the_newest_name(capsys, tmp_path):
    """A kill between step=N.ckpt and last.ckpt (here: last.ckpt is an older checkpoint) or a
    copied run: --resume continues from the highest step recorded in a good checkpoint, and
    `corekit run` resumes by itself."""
    spec, run = write_spec(tmp_path, max_steps=6, checkpoint_every=3), tmp_path / "run"
    assert run_cli(capsys, "train", str(spec), "--run-dir", str(run), "-j", "1")[0] == 0
    ckpts = run / "checkpoints"
    for name in ("last.ckpt", "last.ckpt.sha256"):
        (ckpts / name).write_bytes((ckpts / name.replace("last", "step=3")).read_bytes())
    (ckpts / "step=6.ckpt.sha256").unlink()  # written by an earlier version: no checksum to check
    (run / "model.safetensors").unlink()
    moved = tmp_path / "moved"
    run.rename(moved)
    code, out, err = run_cli(capsys, "run", str(spec), "--run-dir", str(moved), "-j", "1", "--set", "train.max_steps=8")
    assert code == 0, err
    assert torch.load(moved / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    assert sorted(p.name for p in (moved / "checkpoints").glob("*.ckpt")) == [
        "last.ckpt", "step=3.ckpt", "step=6.ckpt"]  # no -v1 names


def test_resume_without_a_checkpoint(capsys, tmp_path):
    spec = write_spec(tmp_path)
    code, _, err = run_cli(capsys, "train", str(spec), "--run-dir", str(tmp_path / "run"), "--resume", "-j", "1")
    assert code == 2 and "holds no checkpoints" in err


def test_weights_that_do_not_fit_the_spec(registry, tmp_path):
    from corekit.spec import load_spec
    from corekit.weights import load_weights, save_weights

    spec = load_spec({"model": model_section()}, registry=registry)
    path = save_weights(tiny_model(registry), spec, registry, tmp_path / "w.safetensors")
    with pytest.raises(CorekitError, match="does not fit"):
        load_weights(tiny_model(registry, n_layers=3), path)
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(CorekitError, match="cannot read weights"):
        load_weights(tiny_model(registry), tmp_path / "bad.safetensors")


def _losses(metrics_csv: Path) -> dict[int, float]:
    """step -> train loss (the last row logged for a step wins, as after a resume)."""
    out = {}
    for row in csv.DictReader(metrics_csv.open()):
        if row.get("train_loss"):
            out[int(row["step"])] = float(row["train_loss"])
    return out


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    """Killed mid-run and resumed, every logged loss after the resume point equals the
    uninterrupted run's (CPU, fp32), because the batches are a pure function of the step."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    exe = shutil.which("corekit", path=str(Path(sys.executable).parent)) or shutil.which("corekit")
    spec = write_spec(tmp_path, max_steps=16, checkpoint_every=4, eval_every=8, log_every=1)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([exe, "train", str(spec), "--run-dir", str(whole), "-j", "1"], check=True, env=env,
                   capture_output=True)

    proc = subprocess.Popen([exe, "train", str(spec), "--run-dir", str(killed), "-j", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step=8.ckpt").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()  # really interrupted

    subprocess.run([exe, "train", str(spec), "--run-dir", str(killed), "--resume"], check=True, env=env,
                   capture_output=True)
    a, b = _losses(whole / "metrics.csv"), _losses(killed / "metrics.csv")
    resumed_from = torch.load(killed / "checkpoints" / "step=8.ckpt", weights_only=True)["global_step"]
    after = [s for s in a if s >= resumed_from]
    assert len(after) >= 6
    for step in after:
        assert b[step] == pytest.approx(a[step], abs=1e-6), step
    from safetensors.torch import load_file

    wa, wb = load_file(str(whole / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_run_does_every_stage_then_skips_them(capsys, tmp_path):
    spec, run = write_spec(tmp_path, max_steps=4, eval_every=2), tmp_path / "run"
    code, out, err = run_cli(capsys, "run", str(spec), "--run-dir", str(run), "-j", "1")
    assert code == 0, err
    assert "val loss before training" in out and "sample: 'def '" in out
    for name in ("tokenizer.json", "data/manifest.json", "model.safetensors", "metrics.csv", "curves.png"):
        assert (run / name).is_file(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import re

    before = float(re.search(r"val loss before training\W+([\d.]+)", out).group(1))
    after = float(re.search(r"\bval loss\W+([\d.]+) \(perplexity", out).group(1))
    assert after < before  # the model learned something in 4 steps
    stamp = (run / "model.safetensors").stat().st_mtime_ns
    code, out, err = run_cli(capsys, "run", str(spec), "--run-dir", str(run), "-j", "1")
    assert code == 0 and "skipped" in err and "before training" not in out
    assert (run / "model.safetensors").stat().st_mtime_ns == stamp

    code, out, _ = run_cli(capsys, "eval", str(run))
    assert code == 0 and f"val loss {after:.4f}" in out


def test_eval_needs_a_trained_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", str(tmp_path))
    assert code == 2 and "model.safetensors" in err


def test_validation_loss_is_mean_token_cross_entropy(registry, tmp_path):
    """Against a hand computation over the same windows."""
    import torch.nn.functional as F

    from corekit.data.windows import ShardSet, ValWindows
    from corekit.spec import load_spec
    from corekit.train.evaluate import validation_loss
    from corekit.rundir import RunDir, ensure_tokenizer, file_sha256
    from corekit.data.shards import prepare_shards

    spec_path = write_spec(tmp_path)
    spec = load_spec(spec_path, registry=registry)
    run = RunDir(tmp_path / "run")
    tok, _ = ensure_tokenizer(spec, run, registry)
    prepare_shards(run.data, spec.data, tok, file_sha256(run.tokenizer), workers=1)
    model = tiny_model(registry, vocab_size=257)
    got = validation_loss(model, run.data, 32, max_windows=5, batch_size=2)
    windows = ValWindows(ShardSet(run.data, "val"), 32, 5)
    losses = [F.cross_entropy(model(x[None])[0], y, reduction="sum").item() for x, y in windows]
    assert got == pytest.approx(sum(losses) / (32 * len(windows)), rel=1e-5)


def test_sessions_merge_into_one_metrics_file(tmp_path):
    """A resumed session's rows follow the first session's, and replace its rows for a step."""
    from corekit.train.curves import merge_sessions, read_metrics

    for version, rows in ((0, "step,train_loss\n1,5.0\n2,4.0\n3,3.5\n"),
                          (1, "step,train_loss,val_loss\n3,3.0,\n4,2.5,2.6\n")):
        path = tmp_path / "logs" / f"version_{version}" / "metrics.csv"
        path.parent.mkdir(parents=True)
        path.write_text(rows)
    series = read_metrics(merge_sessions(tmp_path))
    assert series["train_loss"] == {1: 5.0, 2: 4.0, 3: 3.0, 4: 2.5}
    assert series["val_loss"] == {4: 2.6}


@pytest.mark.slow
def test_run_the_tiny_example_end_to_end(capsys, tmp_path):
    """The main job's spec, shortened: corekit run examples/tiny.toml on the embedded corpus."""
    spec = Path(__file__).resolve().parents[2] / "examples" / "tiny.toml"
    code, out, err = run_cli(capsys, "run", str(spec), "--run-dir", str(tmp_path / "tiny"), "-j", "1",
                             "--set", "train.max_steps=4", "--set", "train.batch_size=4",
                             "--set", "train.eval_every=2", "--set", "data.max_documents=60",
                             "--set", "data.val_windows=8")
    assert code == 0, err
    assert "val loss before training" in out and (tmp_path / "tiny" / "model.safetensors").is_file()


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_accumulating_k_micro_batches_equals_one_k_times_larger_batch(registry, optimizer):
    from corekit.spec import load_spec

    spec = load_spec({"model": model_section(), "train": {
        "max_steps": 2, "optimizer": {"name": optimizer, "lr": 0.05, "weight_decay": 0.0},
        "scheduler": "constant"}}, registry=registry)
    torch.manual_seed(1)
    data = torch.randint(0, 64, (16, 17))
    inputs, targets = data[:, :-1], data[:, 1:]

    def trained(batch_size: int, accumulate: int) -> dict[str, torch.Tensor]:
        model = tiny_model(registry)  # the same initial weights each time
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=batch_size)
        L.Trainer(max_steps=2, accumulate_grad_batches=accumulate, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, deterministic=True).fit(
            LanguageModelTask(model, spec, registry), loader)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    one, four = trained(8, 1), trained(2, 4)
    untouched = tiny_model(registry).state_dict()
    assert any(not torch.equal(one[k], untouched[k]) for k in one)  # the steps changed the weights
    for key in one:
        torch.testing.assert_close(four[key], one[key], atol=1e-5, rtol=1e-4)


PROBE = '''
"""A plugin whose trainer callback records, per rank, each batch and the weights after each step."""
import hashlib
import json
import os

import lightning as L

from corekit import hookimpl


class Probe(L.Callback):
    def _write(self, trainer, record):
        with open(os.path.join(os.environ["PROBE_DIR"], f"rank{trainer.global_rank}.jsonl"), "a") as fh:
            fh.write(json.dumps(record) + "\\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        digest = hashlib.sha1(batch[0].cpu().numpy().tobytes()).hexdigest()
        self._write(trainer, {"step": trainer.global_step, "batch": digest, "world": trainer.world_size})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        weights = sum(float(p.detach().double().sum()) for p in pl_module.parameters())
        self._write(trainer, {"step": trainer.global_step, "weights": weights})


@hookimpl
def corekit_trainer_callbacks(spec):
    return [Probe()]
'''


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    """Lightning DDP (gloo) with 2 CPU processes: different data per rank, identical weights
    after every step, and a checkpoint that loads in a single process."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    exe = shutil.which("corekit", path=str(Path(sys.executable).parent)) or shutil.which("corekit")
    spec = write_spec(tmp_path, max_steps=3, eval_every=3, checkpoint_every=3,
                      strategy='"ddp"', devices=2)
    (tmp_path / "ddp_probe.py").write_text(PROBE)
    (tmp_path / "registry.toml").write_text('modules = ["./ddp_probe.py"]\n')
    probe = tmp_path / "probe"
    probe.mkdir()
    env = {**os.environ, "PROBE_DIR": str(probe), "COREKIT_REGISTRY": str(tmp_path / "registry.toml")}
    proc = subprocess.run([exe, "train", str(spec), "--run-dir", str(tmp_path / "run"), "-j", "1"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    records = {r: [json.loads(line) for line in (probe / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)}
    batches = {r: [x["batch"] for x in records[r] if "batch" in x] for r in (0, 1)}
    weights = {r: [x["weights"] for x in records[r] if "weights" in x] for r in (0, 1)}
    assert all(x.get("world", 2) == 2 for x in records[0])
    assert len(batches[0]) == len(batches[1]) == 3
    assert not set(batches[0]) & set(batches[1])  # each rank sees its own windows
    assert len(weights[0]) == 3
    for w0, w1 in zip(weights[0], weights[1], strict=True):
        assert w0 == pytest.approx(w1, rel=1e-12, abs=1e-9)  # gradients were all-reduced
    assert len(set(weights[0])) == 3  # and the weights really changed at each step

    # the checkpoint and the final weights load in a single process
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 3
    proc = subprocess.run([exe, "eval", str(tmp_path / "run")], env={**os.environ}, capture_output=True, text=True)
    assert proc.returncode == 0 and "val loss" in proc.stdout


def test_generation_scores_against_hand_computed_bleu_and_rouge(monkeypatch):
    """BLEU-4 (5/6 * 3/5 * 2/4 * 1/3)^(1/4) = 0.5373 and ROUGE-L F1 5/6 (LCS of 5 of 6 words)
    for 'the cat sat on the mat' against 'the cat sat on a mat'; identical text scores 1."""
    import corekit.generation
    from corekit.train.evaluate import generation_scores

    replies = ["the cat sat on the mat", "a quick brown fox jumps over"]
    monkeypatch.setattr(corekit.generation, "generate", lambda *args, **kwargs: list(replies))

    class Tok:
        eot_id = 0

    scores = generation_scores(None, Tok(), [("p", "the cat sat on a mat")], 8)
    assert scores["bleu"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-4)
    assert scores["rougeL"] == pytest.approx(5 / 6, abs=1e-4)
    replies[:] = ["a quick brown fox jumps over"]
    scores = generation_scores(None, Tok(), [("p", "a quick brown fox jumps over")], 8)
    assert scores["bleu"] == pytest.approx(1.0) and scores["rougeL"] == pytest.approx(1.0)


@pytest.mark.slow
def test_eval_with_prompt_reference_pairs(capsys, tmp_path):
    import json
    import re

    spec_path, run = write_spec(tmp_path, max_steps=3), tmp_path / "run"
    assert run_cli(capsys, "train", str(spec_path), "--run-dir", str(run), "-j", "1")[0] == 0
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p, "reference": "the of and to in"}) + "\n" for p in ("the", "of")))
    code, out, err = run_cli(capsys, "eval", str(run), "--data", str(pairs), "-n", "8")
    assert code == 0, err
    found = re.search(r"2 pairs, BLEU ([\d.]+), ROUGE-L F1 ([\d.]+)", out)
    assert found and all(0.0 <= float(v) <= 1.0 for v in found.groups())
    for text, needle in [('{"prompt": "x"}\n', "bad.jsonl:1"), ("", "no prompt/reference pairs"),
                         ("{oops\n", "not valid JSON")]:
        (tmp_path / "bad.jsonl").write_text(text)
        code, _, err = run_cli(capsys, "eval", str(run), "--data", str(tmp_path / "bad.jsonl"))
        assert code == 2 and needle in err and "Traceback" not in err


@pytest.mark.slow
def test_resume_from_an_early_checkpoint_matches_an_uninterrupted_run(capsys, tmp_path):
    """Resume at step 4 of 16 (a constant LR, so a 4-step session follows the same schedule):
    every later loss equals the uninterrupted run's. With a dataset shortened by the resume
    offset, Lightning would end the epoch after 8 more steps and replay step 4's batches."""
    spec = write_spec(tmp_path, max_steps=16, checkpoint_every=4, eval_every=8, log_every=1)
    text = spec.read_text().replace('[train.optimizer]', '[train.scheduler]\nname = "constant"\n[train.optimizer]')
    spec.write_text(text)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run_cli(capsys, "train", str(spec), "--run-dir", str(whole), "-j", "1")[0] == 0
    assert run_cli(capsys, "train", str(spec), "--run-dir", str(parts), "-j", "1", "--set", "train.max_steps=4")[0] == 0
    code, _, err = run_cli(capsys, "train", str(spec), "--run-dir", str(parts), "--resume")
    assert code == 0, err
    a, b = _losses(whole / "metrics.csv"), _losses(parts / "metrics.csv")
    assert sorted(a) == sorted(b) == list(range(16))
    for step in range(4, 16):
        assert b[step] == pytest.approx(a[step], abs=1e-6), step
