"""One writer per run directory (corekit.lock), a trained run's spec written once per meaning
(corekit.rundir), and leftovers of killed writers cleaned (corekit.io)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corekit.errors import CorekitError
from corekit.lock import RunLocked, held, lock_path, writing
from helpers import run_cli, write_spec

HOLD = """
import sys, time
from pathlib import Path
from corekit.lock import writing
with writing(sys.argv[1], command="holder for the test"):
    Path(sys.argv[2]).write_text("held")
    time.sleep(120)
"""


def _corekit() -> str:
    return shutil.which("corekit", path=str(Path(sys.executable).parent)) or shutil.which("corekit")


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, "the holder did not take the lock"
        time.sleep(0.02)


@pytest.fixture
def holder(tmp_path):
    """Another process holding the write lock of tmp_path/run (killed at the end)."""
    run, ready = tmp_path / "run", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run), str(ready)])
    _wait_for(ready, proc)
    yield run, proc
    proc.kill()
    proc.wait()


def test_the_lock_is_reentrant_and_released(tmp_path):
    run = tmp_path / "run"
    with writing(run, command="outer"):
        with writing(run, command="inner"):
            assert held(run)
        assert held(run)
        assert json.loads(lock_path(run).read_text())["command"] == "outer"
    assert not held(run) and not lock_path(run).exists()  # a clean release leaves no lock file
    assert lock_path(run) == tmp_path / ".run.lock"


def test_a_second_writer_is_refused_naming_the_holder(holder):
    run, proc = holder
    with pytest.raises(RunLocked, match=rf"being written by pid {proc.pid} \(holder for the test, since .*Nothing"):
        with writing(run):
            pass


def test_a_dead_holders_lock_is_taken_over_with_a_notice(holder):
    run, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    notices: list[str] = []
    with writing(run, command="me", notice=notices.append):
        assert json.loads(lock_path(run).read_text())["pid"] == os.getpid()
    assert len(notices) == 1 and f"from pid {proc.pid}" in notices[0] and "no longer running" in notices[0]


@pytest.mark.parametrize("command", [["tokenizer", "train"], ["data", "prepare"], ["train"], ["run"]])
def test_commands_that_write_a_run_exit_2_while_another_process_writes_it(holder, tmp_path, command):
    run, proc = holder
    spec = write_spec(tmp_path)
    result = subprocess.run([_corekit(), *command, str(spec), "--run-dir", str(run)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"pid {proc.pid}" in result.stderr and "holder for the test" in result.stderr
    assert "Traceback" not in result.stderr
    assert not run.exists() or not any(run.iterdir())  # nothing was written


@pytest.mark.slow
def test_two_trainings_of_one_run_directory(tmp_path):
    """A real race: the second `corekit train` exits 2 naming the first, which finishes unharmed."""
    spec, run = write_spec(tmp_path, max_steps=40, checkpoint_every=20, eval_every=20), tmp_path / "run"
    first = subprocess.Popen([_corekit(), "train", str(spec), "--run-dir", str(run), "-j", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (lock_path(run).is_file() and lock_path(run).read_text().strip()):  # the first holds the lock
        assert first.poll() is None and time.time() < deadline, "the first training ended before the race"
        time.sleep(0.02)
    first.send_signal(signal.SIGSTOP)  # frozen while it holds the lock, so the race cannot end early
    try:
        second = subprocess.run([_corekit(), "train", str(spec), "--run-dir", str(run), "--set", "model.n_layers=1"],
                                capture_output=True, text=True, timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2 and f"pid {first.pid}" in second.stderr, second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    from corekit.run import Run

    trained = Run.open(run)
    assert trained.spec.model.n_layers == 2 and trained.model() is not None  # the weights fit the spec
    assert not list((run / "checkpoints").glob("*-v1.ckpt"))


# --------------------------------------------------------------------------- a trained run's spec
@pytest.fixture
def trained_copy(trained_run, tmp_path):
    """A copy of the session's trained run, and its spec as a spec file."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    spec = tmp_path / "spec.toml"
    shutil.copy2(run / "spec.toml", spec)
    return run, spec


@pytest.mark.parametrize("command", [["data", "prepare"], ["tokenizer", "train"], ["train", "--resume"]])
def test_a_change_to_a_trained_runs_model_is_refused_before_anything_is_touched(capsys, trained_copy, command):
    run, spec = trained_copy
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, _, err = run_cli(capsys, *command, str(spec), "--run-dir", str(run), "--set", "model.d_model=32",
                           "--set", "train.seed=7")
    assert code == 2 and "Traceback" not in err
    assert "model.d_model: 64 -> 32" in err and "train.seed: 1337 -> 7" in err and "nothing was changed" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_resumable_change_is_kept_and_recorded(capsys, trained_copy):
    from corekit.spec import read_spec_file

    run, spec = trained_copy
    code, _, err = run_cli(capsys, "data", "prepare", str(spec), "--run-dir", str(run), "-j", "1",
                           "--set", "train.max_steps=120", "--set", "export.quantize='int8'")
    assert code == 0, err
    assert read_spec_file(run / "spec.toml")["train"]["max_steps"] == 120
    (entry,) = [json.loads(line) for line in (run / "spec-changes.jsonl").read_text().splitlines()]
    assert entry["changed"] == {"train.max_steps": [80, 120], "export.format": [None, "onnx"],
                                "export.quantize": [None, "int8"]}
    assert "data prepare" in entry["command"]


def test_an_untrained_run_takes_any_spec(capsys, tmp_path):
    spec, run = write_spec(tmp_path), tmp_path / "run"
    assert run_cli(capsys, "tokenizer", "train", str(spec), "--run-dir", str(run))[0] == 0
    code, _, err = run_cli(capsys, "tokenizer", "train", str(spec), "--run-dir", str(run), "--set", "model.d_model=16")
    assert code == 0, err
    assert not (run / "spec-changes.jsonl").exists()


# --------------------------------------------------------------------------- leftovers
def test_a_staged_output_cleans_what_a_killed_writer_left(tmp_path):
    from corekit.io import staged_dir

    out = tmp_path / "bundle"
    (tmp_path / ".bundle.tmp-dead1").mkdir()
    (tmp_path / ".bundle.tmp-dead1" / "model.onnx").write_bytes(b"half")
    old = tmp_path / ".bundle.old-dead2"
    (old / "previous").mkdir(parents=True)
    (old / "previous" / "model.onnx").write_bytes(b"the finished bundle")
    (tmp_path / ".other.tmp-keep").mkdir()  # another output's
    with pytest.raises(RuntimeError):
        with staged_dir(out):
            # killed between the two renames: the finished bundle was put back before anything else
            assert (out / "model.onnx").read_bytes() == b"the finished bundle"
            raise RuntimeError("fail")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-keep", "bundle"]
    with staged_dir(out) as tmp:
        (tmp / "model.onnx").write_bytes(b"new")
    assert (out / "model.onnx").read_bytes() == b"new"


def test_an_interrupted_data_swap_leaves_no_old_shards(tmp_path):
    from corekit.data.shards import _recover_swap

    data, old = tmp_path / "data", tmp_path / "data.old"
    data.mkdir()
    old.mkdir()
    (old / "shard.bin").write_bytes(b"x")
    _recover_swap(data)
    assert data.is_dir() and not old.exists()


def test_a_run_locked_error_is_a_corekit_error():
    assert issubclass(RunLocked, CorekitError)
