"""Checkpoints that a kill, a full disk or a moved run directory cannot spoil.

Lightning saves a checkpoint through fsspec, which writes a temporary file under ``$TMPDIR``
and moves it into place: when the run directory is on another filesystem the move is a copy,
and a kill during it leaves a truncated ``last.ckpt``. :class:`AtomicCheckpointIO` (a Lightning
``CheckpointIO`` plugin) writes each checkpoint to a temporary file in its own directory,
fsyncs it and renames it into place, then records its sha256 beside it (``NAME.ckpt.sha256``).
A failed save (a kill, a full disk) leaves every earlier checkpoint as it was and no partial
file behind.

:func:`newest_checkpoint` chooses what ``--resume`` continues from: the checkpoint with the
highest step recorded inside it (not the newest name, so a copied or moved run, or a kill
between ``step=N.ckpt`` and ``last.ckpt``, loses nothing) whose checksum matches.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from corekit.errors import CorekitError
from corekit.io import atomic_write_checked, checksum_file, checksum_problem

class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint format, written atomically in the destination directory and
    recorded with its sha256."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        try:
            atomic_write_checked(path, data)  # no partial file on any failure; old or new matches its record
        except CorekitError as exc:  # a full disk, say
            raise CorekitError(f"{exc}. The checkpoints saved before are intact: make room, then continue with "
                               "--resume") from None

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        checksum_file(path).unlink(missing_ok=True)


def clean_partial_saves(ckpt_dir: Path) -> list[Path]:
    """Remove the temporary files of saves a kill interrupted (``.NAME.ckpt.*.tmp``); call it
    holding the run's write lock. Returns what was removed."""
    removed = sorted(ckpt_dir.glob(".*.tmp")) if ckpt_dir.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


@dataclass(frozen=True)
class Candidate:
    """A checkpoint file and what was found about it."""

    path: Path
    step: int | None = None
    problem: str | None = None


def _step(path: Path) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    step = state.get("global_step") if isinstance(state, dict) else None
    if not isinstance(step, int):
        raise ValueError("it records no global_step (not a Lightning checkpoint)")
    return step


def newest_checkpoint(ckpt_dir: Path) -> tuple[Path, list[Candidate]]:
    """The checkpoint of ``ckpt_dir`` to resume from: the highest step recorded inside one whose
    checksum matches (``last.ckpt`` on a tie). Returns it and the checkpoints passed over, with why.

    Raises:
        CorekitError: no checkpoint there can be resumed from (each named with its problem).
    """
    found = []
    for path in sorted(ckpt_dir.glob("*.ckpt")):
        try:
            found.append(Candidate(path, _step(path)))
        except Exception as exc:  # truncated zip, pickled code refused, wrong contents, ...
            found.append(Candidate(path, problem=f"unreadable ({type(exc).__name__}: {exc})"))
    readable = sorted((c for c in found if c.step is not None),
                      key=lambda c: (c.step, c.path.name == "last.ckpt"), reverse=True)
    skipped = [c for c in found if c.problem is not None]
    for candidate in readable:
        problem = checksum_problem(candidate.path)
        if problem is None:
            return candidate.path, skipped
        skipped.append(Candidate(candidate.path, candidate.step, problem))
    if not found:
        raise CorekitError(f"--resume: {ckpt_dir} holds no checkpoints; train without --resume first")
    listed = "; ".join(f"{c.path.name}: {c.problem}" for c in skipped)
    raise CorekitError(f"--resume: no checkpoint in {ckpt_dir} can be resumed from ({listed}). Nothing was changed; "
                       "start the run afresh in another --run-dir")
