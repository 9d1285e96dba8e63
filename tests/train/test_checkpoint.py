"""Checkpoints a kill, a full disk or another filesystem cannot spoil (corekit.train.checkpoint)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import torch

from corekit.errors import CorekitError
from corekit.io import checksum_file
from corekit.train.checkpoint import AtomicCheckpointIO, clean_partial_saves, newest_checkpoint


def _state(step: int, numel: int = 1000) -> dict:
    return {"global_step": step, "weights": torch.full((numel,), float(step))}


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_a_checkpoint_is_saved_with_its_checksum_and_removed_with_it(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "step=3.ckpt"
    io.save_checkpoint(_state(3), path)
    assert checksum_file(path).read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.load(path, weights_only=True)["global_step"] == 3
    io.remove_checkpoint(path)
    assert not path.exists() and not checksum_file(path).exists()


def test_a_save_that_fails_half_way_leaves_the_earlier_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    """The temporary file is in the checkpoint's own directory (never $TMPDIR, whose move across
    filesystems is a copy a kill can cut), and a failure removes it."""
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint(_state(1), path)
    before = path.read_bytes()
    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    renames = []
    real_replace = os.replace

    def replace(src, dst):
        renames.append((Path(src).parent, Path(dst).parent))
        if Path(dst).name == "last.ckpt":
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(CorekitError, match=r"last.ckpt.*No space left.*saved before are intact.*--resume"):
        io.save_checkpoint(_state(2), path)
    assert renames and all(a == b == tmp_path for a, b in renames) and not any(elsewhere.iterdir())
    assert path.read_bytes() == before and _leftovers(tmp_path) == []
    assert newest_checkpoint(tmp_path)[0] == path


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs mounted for the test: a disk that really fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        reason = f"this machine does not let the test mount a tmpfs ({result.stderr.strip() or result.returncode})"
        print(reason)
        pytest.skip(reason)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_during_a_save_keeps_every_earlier_checkpoint(small_tmpfs):
    io = AtomicCheckpointIO()
    first = small_tmpfs / "step=1.ckpt"
    io.save_checkpoint(_state(1, numel=20_000), first)  # 80 kB
    with pytest.raises(CorekitError, match=r"step=2.ckpt.*No space left on device.*intact"):
        io.save_checkpoint(_state(2, numel=400_000), small_tmpfs / "step=2.ckpt")  # 1.6 MB
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["step=1.ckpt", "step=1.ckpt.sha256"]
    assert newest_checkpoint(small_tmpfs)[0] == first
    io.save_checkpoint(_state(2, numel=20_000), small_tmpfs / "step=2.ckpt")  # room again: the same name
    assert newest_checkpoint(small_tmpfs)[0] == small_tmpfs / "step=2.ckpt"


SAVER = """
import sys, torch
from pathlib import Path
from corekit.train.checkpoint import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), Path(sys.argv[1]) / "last.ckpt"
for step in range(1, 10_000):
    io.save_checkpoint({"global_step": step, "weights": torch.full((3_000_000,), float(step))}, path)
    print(step, flush=True)
"""


def test_killed_while_saving_onto_another_filesystem(tmp_path):
    """The run directory on a tmpfs (/dev/shm), $TMPDIR on the disk: SIGKILL at a spread of
    moments during saves always leaves a whole last.ckpt that --resume takes."""
    shm = Path("/dev/shm")
    elsewhere = shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev
    # without a second filesystem the kills still land mid-save; only the cross-filesystem part is lost
    run = (shm if elsewhere else tmp_path) / f"corekit-test-{uuid.uuid4().hex}"
    run.mkdir()
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    try:
        for delay in (0.05, 0.3, 0.7):
            proc = subprocess.Popen([sys.executable, "-c", SAVER, str(run)], stdout=subprocess.PIPE, text=True,
                                    env={**os.environ, "TMPDIR": str(scratch)})
            assert proc.stdout.readline().strip() == "1"  # the first save is complete
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            clean_partial_saves(run)
            chosen, skipped = newest_checkpoint(run)
            state = torch.load(chosen, weights_only=True)
            assert chosen.name == "last.ckpt" and not skipped
            assert torch.equal(state["weights"], torch.full((3_000_000,), float(state["global_step"])))
            assert _leftovers(run) == [] and not any(scratch.iterdir())
    finally:
        shutil.rmtree(run, ignore_errors=True)


def test_resume_choice_and_its_refusals(tmp_path):
    io = AtomicCheckpointIO()
    with pytest.raises(CorekitError, match="holds no checkpoints"):
        newest_checkpoint(tmp_path)
    for step in (2, 4):
        io.save_checkpoint(_state(step), tmp_path / f"step={step}.ckpt")
    io.save_checkpoint(_state(4), tmp_path / "last.ckpt")
    assert newest_checkpoint(tmp_path) == (tmp_path / "last.ckpt", [])  # a tie goes to last.ckpt
    (tmp_path / "last.ckpt").write_bytes(b"")
    chosen, skipped = newest_checkpoint(tmp_path)
    assert chosen == tmp_path / "step=4.ckpt" and [c.path.name for c in skipped] == ["last.ckpt"]
    torch.save({"not": "lightning"}, tmp_path / "step=9.ckpt")  # pickle-free, but not a checkpoint
    chosen, skipped = newest_checkpoint(tmp_path)
    assert chosen == tmp_path / "step=4.ckpt" and "global_step" in {c.path.name: c.problem for c in skipped}[
        "step=9.ckpt"]
    (tmp_path / ".step=5.ckpt.abc.tmp").write_bytes(b"half")
    assert [p.name for p in clean_partial_saves(tmp_path)] == [".step=5.ckpt.abc.tmp"]
