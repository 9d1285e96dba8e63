"""One writer per run directory: an advisory lock that every stage writing a run holds.

The lock is ``flock(2)`` on a small file beside the run directory (``runs/.NAME.lock`` for
``runs/NAME``), so it also covers a run that is created or replaced whole by a rename (a
compressed or fine-tuned run), and the kernel releases it when its holder dies, however it
dies. While held, the file records who holds it (pid, host, command, start time): a second
writer is refused with a :class:`RunLocked` error naming the holder. A clean release removes
the file; one left behind is the record of a process that died holding it, and the next
writer takes the lock over and says so. Readers (eval,
generate, export of a finished run) never take it: every write they could see is atomic.

The lock is re-entrant within a process (``corekit run`` holds it around stages that take it
again), and processes that Lightning starts for the other ranks of a distributed run (their
``LOCAL_RANK`` or ``RANK`` is not 0) do not take it: rank 0 holds it for them.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from corekit.errors import CorekitError

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]  # no advisory locks on this platform

#: locks this process holds: lock file -> its file descriptor
_HELD: dict[str, int] = {}
#: this process's command, as :func:`set_command_line` gave it (None: read sys.argv)
_COMMAND: list[str] | None = None


class RunLocked(CorekitError):
    """Another process is writing the run directory."""


def lock_path(run_dir: str | Path) -> Path:
    """The lock file of ``run_dir``: ``.NAME.lock`` in its parent directory."""
    run = Path(os.path.abspath(run_dir))
    return run.parent / f".{run.name}.lock"


def _other_rank() -> bool:
    return any(os.environ.get(name, "0") not in ("", "0") for name in ("LOCAL_RANK", "RANK"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _read(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 64 << 10)
    try:
        info = json.loads(raw.decode("utf-8")) if raw.strip() else None
    except (UnicodeDecodeError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _record(fd: int, command: str) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))


def _holder(info: dict[str, Any] | None) -> str:
    if info is None:
        return "another process"
    where = "" if info.get("host") in (None, socket.gethostname()) else f" on {info['host']}"
    return f"pid {info['pid']}{where} ({info.get('command', '?')}, since {info.get('since', '?')})"


def set_command_line(argv: list[str]) -> None:
    """Record the command this process runs (the CLI does, so that an in-process call records
    ``corekit train ...`` rather than its host's command line)."""
    global _COMMAND
    _COMMAND = list(argv)


def command_line() -> str:
    """This process's command line, shortened (what a lock or a log records it was doing)."""
    if _COMMAND is not None:
        words = _COMMAND
    else:
        words = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    text = " ".join(words)
    return text if len(text) <= 200 else text[:197] + "..."


def _acquire(path: Path, run_dir: str | Path) -> int:
    """An open, exclusively flocked descriptor of the lock file ``path``. A releasing holder
    unlinks the file while it still holds it, so a lock taken on a file that is no longer at
    ``path`` is dropped and taken again on the new file."""
    for _ in range(100):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise CorekitError(f"cannot lock {run_dir} for writing: {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            info = _read(fd)
            os.close(fd)
            raise RunLocked(
                f"{run_dir} is being written by {_holder(info)}; wait for it to finish (or stop it), or use another "
                f"--run-dir. Nothing was changed (lock file {path})"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder released it and removed the file in between: try the new one
    raise CorekitError(f"cannot lock {run_dir} for writing: {path} keeps changing")


@contextmanager
def writing(run_dir: str | Path, command: str | None = None,
            notice: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the write lock of ``run_dir`` (created if need be) for the ``with`` block.

    Args:
        command: what this process is doing, recorded for a refused second writer
            (default: its command line).
        notice: where to say that a dead holder's lock was taken over (default: stderr).

    Raises:
        RunLocked: another live process holds it; nothing was changed.
    """
    path = lock_path(run_dir)
    key = str(path)
    if key in _HELD or fcntl is None or _other_rank():  # held already (re-entered), or not ours to take
        yield
        return
    fd = _acquire(path, run_dir)
    previous = _read(fd)
    if previous is not None and previous["pid"] != os.getpid() and not (
            previous.get("host") == socket.gethostname() and _alive(previous["pid"])):
        say = notice or (lambda message: print(message, file=sys.stderr))
        say(f"note: taking over the lock of {run_dir} from {_holder(previous)}, which is no longer running")
    _record(fd, command or command_line())
    _HELD[key] = fd
    try:
        yield
    finally:
        del _HELD[key]
        try:
            path.unlink(missing_ok=True)  # a clean release leaves no lock file (and no holder to report)
        finally:
            os.close(fd)  # releases the flock


def held(run_dir: str | Path) -> bool:
    """Whether this process holds the write lock of ``run_dir``."""
    return str(lock_path(run_dir)) in _HELD
