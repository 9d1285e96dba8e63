"""Where documents come from, and how they are cleaned and split.

Sources are streamed, never loaded whole, so the same code serves the embedded demo
corpus and hundreds of gigabytes:

- ``python-stdlib``: the standard library sources of the running interpreter (tests
  excluded) plus the English reference text of ``pydoc_data.topics``; it exists wherever
  Python does, so the demo needs no download;
- ``paths``: text files (one document each; files over ``max_document_bytes`` are streamed
  and cut into documents at blank lines), globs, directory trees (hidden files and folders
  skipped), and ``.jsonl`` files (one document per line, text under ``text_field``).

Cleaning (all on by default, counted in :class:`CleanStats`): Unicode NFC normalisation,
exact de-duplication by content hash, and a minimum length. Each document goes to train
or val by a hash of its text, so the split is deterministic and stable as a corpus grows;
a corpus so small that every hash falls in one split gives one document to the other
(:class:`SplitPlan`), so that two documents are enough to train.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
import sysconfig
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from corekit.errors import CorekitError

if TYPE_CHECKING:  # pragma: no cover
    from corekit.data.spec import DataSpec

TEST_DIRS = {"test", "tests", "idle_test"}
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class Document:
    """One document: where it came from and its text."""

    origin: str
    text: str


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_documents() -> Iterator[Document]:
    """The ``python-stdlib`` corpus: stdlib ``.py`` files (tests excluded), then pydoc topics."""
    root = _stdlib_root()
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and d not in TEST_DIRS)
        files += [Path(dirpath, f) for f in filenames if f.endswith(".py") and not f.startswith("test_")]
    for path in sorted(files):
        yield Document(f"stdlib:{path.relative_to(root)}", path.read_text(encoding="utf-8", errors="replace"))
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield Document(f"pydoc:{key}", topics[key])


def _expand(pattern: str, index: int, suffixes: list[str]) -> list[Path]:
    path = Path(pattern).expanduser()
    if path.is_dir():
        # hidden files and folders (.git, .venv, ...) are not corpus
        found = [p for p in path.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(path).parts)]
        if suffixes:
            found = [p for p in found if p.suffix in suffixes]
    else:
        found = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    if not found:
        where = f" (from {Path.cwd()})" if not path.is_absolute() else ""
        raise CorekitError(f"data.paths[{index}]: {pattern!r} matches no files{where}")
    return sorted(found)


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` for each non-blank line of a JSONL file; a line that is not
    JSON is a :class:`CorekitError` naming the file, line and column."""
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorekitError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def _jsonl_documents(path: Path, field: str) -> Iterator[Document]:
    for lineno, record in iter_jsonl(path):
        if not isinstance(record, dict) or field not in record:
            fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise CorekitError(
                f"{path}:{lineno}: no field {field!r} (found: {fields}); "
                "set data.text_field to the field holding the text"
            )
        if not isinstance(record[field], str):
            raise CorekitError(f"{path}:{lineno}: field {field!r} is {type(record[field]).__name__}, not text")
        # JSON may escape lone surrogates (\ud800), which are not text: replace them
        text = record[field].encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")
        yield Document(f"{path}:{lineno}", text)


def _text_documents(path: Path, max_bytes: int) -> Iterator[Document]:
    """A text file as one document, or, past ``max_bytes``, as several cut at blank lines.

    Large files are streamed: memory stays near ``max_bytes`` whatever the file's size.
    """
    with path.open("rb") as fh:
        if b"\0" in fh.read(8192):
            return  # binary
    if path.stat().st_size <= max_bytes:
        yield Document(str(path), path.read_bytes().decode("utf-8", errors="replace"))
        return
    part, buffer, size = 0, [], 0
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        for line in iter(lambda: fh.readline(max_bytes), ""):
            buffer.append(line)
            size += len(line)
            # cut at a paragraph break once big enough; cut anyway if none comes
            if (size >= max_bytes and not line.strip()) or size >= 4 * max_bytes:
                yield Document(f"{path}#{part}", "".join(buffer))
                part, buffer, size = part + 1, [], 0
    if buffer:
        yield Document(f"{path}#{part}", "".join(buffer))


def file_documents(
    patterns: list[str], text_field: str = "text", suffixes: Sequence[str] = (), max_document_bytes: int = 1 << 20
) -> Iterator[Document]:
    """Documents from files, globs and directories; ``.jsonl`` files give one per line.

    Binary files (a NUL byte in the first 8 KiB) are skipped; text files larger than
    ``max_document_bytes`` are streamed and cut into documents at blank lines.
    """
    files = [p for i, pattern in enumerate(patterns) for p in _expand(pattern, i, list(suffixes))]
    for path in files:
        if path.suffix in (".jsonl", ".ndjson"):
            yield from _jsonl_documents(path, text_field)
        else:
            yield from _text_documents(path, max_document_bytes)


def raw_documents(data: DataSpec) -> Iterator[Document]:
    """Every document the ``[data]`` section names, before cleaning, in a fixed order."""
    if data.source == "python-stdlib":
        yield from stdlib_documents()
    if data.paths:
        yield from file_documents(data.paths, data.text_field, data.suffixes, data.max_document_bytes)


def source_fingerprint(data: DataSpec) -> str:
    """A hash that changes when the corpus's files change (names, sizes, mtimes)."""
    h = hashlib.sha256()
    if data.source == "python-stdlib":
        h.update(f"python-stdlib {sys.version} {_stdlib_root()}".encode())
    for i, pattern in enumerate(data.paths):
        for path in _expand(pattern, i, data.suffixes):
            st = path.stat()
            h.update(f"{path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass
class CleanStats:
    """What cleaning did, counted in documents."""

    documents_in: int = 0
    too_short: int = 0
    duplicates: int = 0
    documents_out: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def clean_documents(docs: Iterator[Document], data: DataSpec, stats: CleanStats) -> Iterator[Document]:
    """NFC-normalise, drop short and duplicate documents, stop at ``max_documents``."""
    seen: set[bytes] = set()
    for doc in docs:
        stats.documents_in += 1
        text = unicodedata.normalize("NFC", doc.text) if data.normalize else doc.text
        if len(text.strip()) < data.min_chars:
            stats.too_short += 1
            continue
        if data.dedupe:
            digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
            if digest in seen:
                stats.duplicates += 1
                continue
            seen.add(digest)
        stats.documents_out += 1
        yield Document(doc.origin, text)
        if data.max_documents is not None and stats.documents_out >= data.max_documents:
            return


def _bucket(text: str) -> float:
    """A uniform number in [0, 1) from a hash of ``text``."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") / 2**64


def split_of(text: str, val_fraction: float) -> str:
    """``'val'`` or ``'train'``, from a hash of the text: deterministic, by document."""
    return "val" if _bucket(text) < val_fraction else "train"


@dataclass(frozen=True)
class SplitPlan:
    """Which split each cleaned document goes to.

    By a hash of its text (:func:`split_of`), except in a corpus so small that the hashes put
    every document in one split: then the document whose hash is closest to the other split
    (the ``moved``-th cleaned document) goes there instead, so both splits have one.
    """

    val_fraction: float
    moved: int | None = None
    note: str | None = None

    def split(self, index: int, text: str) -> str:
        """The split of the ``index``-th cleaned document, whose text is ``text``."""
        split = split_of(text, self.val_fraction)
        if index == self.moved:
            return "train" if split == "val" else "val"
        return split


def plan_split(data: DataSpec) -> SplitPlan:
    """The :class:`SplitPlan` of the ``[data]`` corpus.

    Reads cleaned documents until both splits have one (about ``1 / val_fraction`` documents
    for a typical corpus); only a corpus whose documents all hash to one split is read whole.

    Raises:
        CorekitError: the corpus has exactly one document, which cannot make two splits.
    """
    seen = {"train": 0, "val": 0}
    # (hash bucket, index, origin) of the train document nearest to val and the other way round
    nearest_val: tuple[float, int, str] | None = None
    nearest_train: tuple[float, int, str] | None = None
    stats = CleanStats()
    for i, doc in enumerate(clean_documents(raw_documents(data), data, stats)):
        bucket = _bucket(doc.text)
        seen["val" if bucket < data.val_fraction else "train"] += 1
        if seen["train"] and seen["val"]:
            return SplitPlan(data.val_fraction)
        if bucket >= data.val_fraction and (nearest_val is None or bucket < nearest_val[0]):
            nearest_val = (bucket, i, doc.origin)
        if bucket < data.val_fraction and (nearest_train is None or bucket > nearest_train[0]):
            nearest_train = (bucket, i, doc.origin)
    count = stats.documents_out
    if count == 0:
        return SplitPlan(data.val_fraction)  # the stages name the empty corpus themselves
    if count == 1:
        raise CorekitError(
            f"the corpus has 1 document after cleaning ({stats.documents_in} read, {stats.too_short} shorter than "
            f"data.min_chars={data.min_chars}, {stats.duplicates} duplicates); training needs at least 2, one to "
            f"train on and one held out for validation (data.val_fraction={data.val_fraction}). Add documents, or "
            "cut a large text file into several with a smaller data.max_document_bytes"
        )
    empty, (_, index, origin) = ("val", nearest_val) if seen["val"] == 0 else ("train", nearest_train)
    note = (
        f"the {empty} split would be empty: all {count} documents hash to the other one at "
        f"data.val_fraction={data.val_fraction}, so the one nearest by hash ({origin}) was moved to {empty}"
    )
    return SplitPlan(data.val_fraction, index, note)


def split_documents(
    data: DataSpec, split: str, stats: CleanStats | None = None, plan: SplitPlan | None = None
) -> Iterator[str]:
    """Texts of one split's cleaned documents, in corpus order (``plan`` defaults to :func:`plan_split`)."""
    plan = plan or plan_split(data)
    for i, doc in enumerate(clean_documents(raw_documents(data), data, stats or CleanStats())):
        if plan.split(i, doc.text) == split:
            yield doc.text
