"""``corekit verify``: check every artifact of a run directory or an export bundle.

A run's artifacts carry their sha256: weights, adapter and tokenizer files and checkpoints in a
``NAME.sha256`` file beside them (:func:`corekit.io.atomic_write_checked`), token shards in the
data manifest, bundle files in the bundle's manifest. Commands check them where they read them;
this checks them all at once, so damage is found before a long job trips over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corekit.errors import CorekitError
from corekit.io import CHECKSUM_SUFFIX, checksum_file, checksum_problem


@dataclass(frozen=True)
class Check:
    """One artifact checked: its path, what it is, and its problem (None: it is sound)."""

    path: Path
    what: str
    problem: str | None = None
    note: str | None = None


#: a run's own artifacts, listed even when they carry no checksum (written by an earlier version)
RUN_FILES = ("model.safetensors", "adapter.safetensors", "tokenizer.json")


def _checked_files(directory: Path, what: str, always: tuple[str, ...] = ()) -> list[Check]:
    names = {name for name in always if (directory / name).is_file()}
    names |= {p.name[: -len(CHECKSUM_SUFFIX)] for p in directory.glob(f"*{CHECKSUM_SUFFIX}")}
    checks = []
    for name in sorted(names):
        path = directory / name
        if checksum_file(path).is_file():
            checks.append(Check(path, what, checksum_problem(path)))
        else:
            checks.append(Check(path, what, note="no checksum recorded (written by an earlier version)"))
    return checks


def _shards(data: Path) -> list[Check]:
    from corekit.data.shards import read_manifest, shard_problem

    manifest = read_manifest(data)
    if manifest is None:
        return [Check(data / "manifest.json", "token shards", "missing or unreadable")]
    try:
        import numpy as np

        itemsize = np.dtype(manifest["config"]["dtype"]).itemsize
        vocab = manifest["config"].get("vocab_size")
        checks = []
        for split, entries in manifest["shards"].items():
            for entry in entries:
                problem = shard_problem(data, entry, itemsize, True, vocab_size=vocab)
                checks.append(Check(data / entry["file"], f"{split} shard", problem))
        return checks
    except (KeyError, TypeError, ValueError) as exc:
        return [Check(data / "manifest.json", "token shards", f"not a corekit data manifest ({exc})")]


def _bundle(bundle: Path) -> list[Check]:
    from corekit.edge.manifest import MANIFEST, read_manifest

    try:
        manifest = read_manifest(bundle, verify=False)
    except CorekitError as exc:
        return [Check(bundle / MANIFEST, "export bundle", str(exc))]
    from corekit.io import file_sha256

    checks = []
    for name, entry in manifest["files"].items():
        path = bundle / name
        if not path.is_file():
            problem: str | None = "missing"
        elif path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
            problem = f"does not match its sha256 in {MANIFEST}"
        else:
            problem = None
        checks.append(Check(path, "bundle file", problem))
    return checks


def verify(path: str | Path) -> list[Check]:
    """Check the run directory or export bundle ``path``: every file with a recorded checksum,
    checkpoints, token shards (and their ids' range), and an export bundle inside the run.

    Raises:
        CorekitError: ``path`` is neither a run directory nor a bundle.
    """
    from corekit.edge.manifest import MANIFEST

    path = Path(path)
    if (path / MANIFEST).is_file():
        return _bundle(path)
    if not (path / "spec.toml").is_file():
        raise CorekitError(f"{path} is neither a run directory (no spec.toml) nor an export bundle (no {MANIFEST})")
    checks = _checked_files(path, "run file", RUN_FILES)
    if (path / "checkpoints").is_dir():
        checks += _checked_files(path / "checkpoints", "checkpoint")
    if (path / "data").is_dir():
        checks += _shards(path / "data")
    if (path / "export" / MANIFEST).is_file():
        checks += _bundle(path / "export")
    return checks
