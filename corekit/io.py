"""Atomic file writes: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from corekit.errors import CorekitError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
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
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CorekitError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    left as it was. Its mode is the umask's, not ``mkdtemp``'s 0700: outputs are meant to be shared."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        tmp.chmod(0o777 & ~_umask())
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
