"""Atomic file writes: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from corekit.errors import CorekitError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes,
                       before_rename: Callable[[], object] | None = None) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half:
    a temporary file in the same directory, fsynced, then renamed (``before_rename`` runs just
    before the rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CorekitError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CorekitError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


#: the suffix of the file beside an artifact that records its sha256
CHECKSUM_SUFFIX = ".sha256"


def checksum_file(path: str | os.PathLike[str]) -> Path:
    """Where the sha256 of ``path`` is recorded: ``NAME.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def recorded_checksums(path: str | os.PathLike[str]) -> list[str]:
    """The sha256s recorded for ``path`` (none when nothing is recorded)."""
    try:
        text = checksum_file(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def atomic_write_checked(path: str | os.PathLike[str], data: bytes) -> Path:
    """:func:`atomic_write_bytes`, with the sha256 of ``data`` recorded beside the file.

    Until the new file is in place the record lists the old file's sha256 too, so a kill at any
    moment leaves a file that matches its record: the old one or the new one.
    """
    path = Path(path)
    new = hashlib.sha256(data).hexdigest()
    old = recorded_checksums(path)[:1] if path.is_file() else []
    atomic_write_bytes(path, data, before_rename=lambda: atomic_write_text(checksum_file(path),
                                                                          "\n".join([new, *old]) + "\n"))
    atomic_write_text(checksum_file(path), new + "\n")
    return path


def record_checksum(path: str | os.PathLike[str]) -> None:
    """Record the sha256 of the file ``path`` as it is now (for files written by other code)."""
    atomic_write_text(checksum_file(path), file_sha256(path) + "\n")


def checksum_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` does not match its recorded sha256 (missing, changed), or None: it matches,
    or it has no record (a file written by an earlier version)."""
    path = Path(path)
    recorded = recorded_checksums(path)
    if not checksum_file(path).is_file():
        return None
    if not path.is_file():
        return "missing"
    if file_sha256(path) not in recorded:
        return f"does not match the sha256 recorded in {checksum_file(path).name}"
    return None


def check_checksum(path: str | os.PathLike[str], recover: str) -> None:
    """Raise a :class:`CorekitError` naming ``path`` if it does not match its recorded sha256;
    ``recover`` says what the user can do."""
    problem = checksum_problem(path)
    if problem is not None:
        raise CorekitError(f"{path} {problem}: it was changed or damaged after it was written. {recover}")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, read in 8 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_replaceable(out: Path, marker: str, what: str) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty directory without ``marker``: only an
    earlier output of the same kind (one holding ``marker``) may be replaced by :func:`replace_dir`."""
    if out.exists() and not out.is_dir():
        raise CorekitError(f"--out {out} is a file; give a directory for {what}")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise CorekitError(
            f"--out {out} is a non-empty directory that is not {what}; choose a new or empty directory "
            f"({what} there, one with {marker}, is replaced)"
        )


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A temporary directory beside ``out`` to write a new run or bundle into; on success it
    replaces ``out`` whole (:func:`replace_dir`), on any failure it is removed and ``out`` is
    left as it was. Its mode is the umask's, not ``mkdtemp``'s 0700: outputs are meant to be shared.

    ``out``'s write lock (:mod:`corekit.lock`) is held throughout, and what a killed earlier
    writer of ``out`` left is cleaned up first (:func:`clean_leftovers`).

    Raises:
        RunLocked: another process is writing ``out``.
    """
    from corekit.lock import writing

    out.parent.mkdir(parents=True, exist_ok=True)
    with writing(out):
        clean_leftovers(out)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
        try:
            tmp.chmod(0o777 & ~_umask())
            yield tmp
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def clean_leftovers(out: Path) -> list[Path]:
    """Remove what a killed writer of ``out`` left beside it: unfinished ``.NAME.tmp-*`` directories
    and ``.NAME.old-*`` ones; an old ``out`` that a kill caught half-way through its replacement
    (moved aside, the new one not yet in place) is put back first. Call it holding ``out``'s write
    lock. Returns what was removed."""
    removed = []
    name = glob.escape(f".{out.name}")
    for old in sorted(out.parent.glob(f"{name}.old-*")):
        previous = old / "previous"
        if previous.exists() and not out.exists():
            os.replace(previous, out)
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    for tmp in sorted(out.parent.glob(f"{name}.tmp-*")):
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished directory ``tmp`` to ``out``; an old ``out`` is replaced whole, never
    merged, and restored if the move fails."""
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / "previous")
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old / "previous", out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def link_tree(src: Path, dst: Path) -> None:
    """Copy the directory ``src`` to ``dst`` as hard links where the filesystem allows (the files
    are never rewritten in place: every write replaces them), else as copies."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)
