"""Token shards: tokenize cleaned documents into memory-mapped files, with a manifest.

Each split (train, val) is a sequence of raw binary shards of ``uint16`` (when every id
fits) or ``uint32`` ids; every document is followed by the end-of-text id. A shard ends at
the first document boundary past ``shard_tokens`` tokens and records the range of
documents it holds, so that any one shard can be rebuilt alone.

``manifest.json`` holds the configuration the shards were made with (tokenizer hash, data
section, corpus fingerprint), and per shard its size, sha256 and document range; it is
rewritten atomically after every shard, so an interrupted run resumes where it stopped.
On a re-run, shards that match the manifest are skipped; a shard whose size or hash does
not match is rebuilt, never read. A changed configuration is built in ``data.next/`` and
swapped in only once complete, so a failed rebuild leaves the previous dataset usable.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from corekit.data.sources import CleanStats, clean_documents, plan_split, raw_documents, source_fingerprint
from corekit.errors import CorekitError
from corekit.io import atomic_write_bytes, atomic_write_text, file_sha256

FORMAT = "corekit-shards"
VERSION = 1
SPLITS = ("train", "val")
#: documents per batch: small batches balance a process pool; in one process, large batches
#: let the tokenizer's own threads (HF tokenizers' rayon pool) work in parallel
BATCH_DOCS = {"pool": 16, "inline": 256}


def dtype_for(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def shard_problem(data_dir: Path, entry: dict[str, Any], itemsize: int, check_hash: bool = True,
                  vocab_size: int | None = None) -> str | None:
    """Why the shard ``entry`` cannot be used (a name outside ``data_dir``, missing, wrong size,
    wrong hash, and with ``check_hash`` and ``vocab_size`` a token id beyond the vocabulary), or None."""
    name = entry.get("file")
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        return f"the manifest in {data_dir} names a shard {name!r} outside its directory (a hand-edited manifest?)"
    path = data_dir / name
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if size != entry["tokens"] * itemsize:
        return f"{path} has {size} bytes, the manifest says {entry['tokens'] * itemsize}"
    if check_hash and file_sha256(path) != entry["sha256"]:
        return f"{path} does not match its sha256 in the manifest"
    if check_hash and vocab_size is not None and size:
        dtype = np.uint16 if itemsize == 2 else np.uint32
        top = int(np.memmap(path, dtype=dtype, mode="r").max())
        if top >= vocab_size:
            return f"{path} holds token id {top}, beyond the tokenizer's {vocab_size} ids"
    return None


def read_manifest(data_dir: Path) -> dict[str, Any] | None:
    """The manifest in ``data_dir``, or None if there is none or it is unreadable."""
    try:
        manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


# --------------------------------------------------------------------------- tokenizing
_WORKER: dict[str, Any] = {}


def encode_documents(tokenizer, texts: list[str], dtype: np.dtype, eot: int) -> list[np.ndarray]:
    """Each text's ids followed by ``eot``, as arrays of ``dtype`` (cheap to send between processes)."""
    return [np.array([*ids, eot], dtype=dtype) for ids in tokenizer.encode_batch(texts, allow_special=False)]


def _init_worker(tokenizer, dtype: np.dtype, eot: int) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism
    _WORKER.update(tokenizer=tokenizer, dtype=dtype, eot=eot)


def _encode(texts: list[str]) -> list[np.ndarray]:
    return encode_documents(_WORKER["tokenizer"], texts, _WORKER["dtype"], _WORKER["eot"])


@dataclass
class _Job:
    """A shard to write: its entry so far and the documents still to encode."""

    split: str
    index: int
    doc_start: int
    doc_end: int | None = None  # fixed for a rebuild, open for a new shard
    parts: list[np.ndarray] = field(default_factory=list)
    tokens: int = 0


def _swap(new: Path, current: Path) -> None:
    """Replace directory ``current`` by ``new`` (a crash in between is undone by :func:`_recover_swap`)."""
    old = current.with_name(current.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    current.rename(old)
    new.rename(current)
    shutil.rmtree(old)


def _recover_swap(current: Path) -> None:
    """Finish or undo a :func:`_swap` that a crash interrupted."""
    old, new = current.with_name(current.name + ".old"), current.with_name(current.name + ".next")
    if current.exists():
        if old.exists():  # killed after the swap, before the old shards were removed
            shutil.rmtree(old)
        return
    if not old.exists():
        return
    manifest = read_manifest(new) if new.exists() else None
    (new if manifest and manifest.get("complete") else old).rename(current)


def _result(res, batch, located):
    try:
        return res.get()
    except CorekitError as exc:
        raise located(batch, exc) from None


@dataclass
class PrepareResult:
    """What ``prepare_shards`` did."""

    manifest: dict[str, Any]
    skipped: bool
    built: int = 0
    reused: int = 0
    repaired: list[str] = field(default_factory=list)


def prepare_shards(
    data_dir: Path,
    data,
    tokenizer,
    tokenizer_sha256: str,
    *,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> PrepareResult:
    """Tokenize the corpus of ``data`` (a DataSpec) into shards under ``data_dir``.

    Args:
        data_dir: where the shards and ``manifest.json`` go.
        data: the validated ``[data]`` section.
        tokenizer: a trained tokenizer with an end-of-text token.
        tokenizer_sha256: hash of the saved tokenizer file (recorded in the manifest).
        workers: tokenizer processes; defaults to ``data.workers`` or all cores.
        on_progress: called with ``(documents, bytes)`` after each batch is encoded.
    """
    eot = tokenizer.eot_id
    if eot is None:
        raise CorekitError(
            "tokenizer.special_tokens must include '<|endoftext|>': it separates documents in the shards"
        )
    dtype = dtype_for(tokenizer.vocab_size)
    config = {
        "tokenizer_sha256": tokenizer_sha256,
        "vocab_size": tokenizer.vocab_size,
        "eot_id": eot,
        "dtype": dtype.name,
        "data": data.model_dump(mode="json", exclude={"workers", "val_windows"}),
        "source": source_fingerprint(data),
    }
    _recover_swap(data_dir)
    old = read_manifest(data_dir)
    if old is not None and old.get("complete") and old.get("config") != config:
        # A finished dataset stays usable until its replacement is complete: build the new
        # configuration beside it (resumable there too), then swap the two directories.
        staging = data_dir.with_name(data_dir.name + ".next")
        result = prepare_shards(staging, data, tokenizer, tokenizer_sha256, workers=workers, on_progress=on_progress)
        _swap(staging, data_dir)
        return result
    plan = plan_split(data)  # before writing anything: a one-document corpus is refused here
    data_dir.mkdir(parents=True, exist_ok=True)
    for leftover in data_dir.glob(".*.tmp"):  # an atomic write killed before its rename
        leftover.unlink()
    old_shards = old["shards"] if old and old.get("config") == config else {s: [] for s in SPLITS}
    good: dict[str, dict[int, dict]] = {s: {} for s in SPLITS}
    rebuild: dict[str, dict[int, dict]] = {s: {} for s in SPLITS}
    repaired = []
    for split in SPLITS:
        for entry in old_shards.get(split, []):
            problem = shard_problem(data_dir, entry, dtype.itemsize)
            if problem is None:
                good[split][entry["doc_start"]] = entry
            else:
                rebuild[split][entry["doc_start"]] = entry
                repaired.append(problem)
    if old and old.get("config") == config and old.get("complete") and not repaired:
        return PrepareResult(old, skipped=True, reused=sum(len(v) for v in good.values()))

    manifest = {"format": FORMAT, "version": VERSION, "complete": False, "config": config,
                # damaged shards stay listed until rebuilt, so that a run interrupted before
                # rebuilding them finds them again (and does not take their range as done)
                "shards": {s: sorted([*good[s].values(), *rebuild[s].values()], key=lambda e: e["doc_start"])
                           for s in SPLITS}}
    stats = CleanStats()
    counts = {s: 0 for s in SPLITS}  # documents seen per split
    ends = {s: max((e["doc_end"] for e in old_shards.get(s, [])), default=0) for s in SPLITS}
    open_jobs: dict[str, _Job | None] = {s: None for s in SPLITS}
    result = PrepareResult(manifest, skipped=False, reused=sum(len(v) for v in good.values()), repaired=repaired)

    def write(job: _Job) -> None:
        raw = (np.concatenate(job.parts) if job.parts else np.zeros(0, dtype)).tobytes()
        name = f"{job.split}_{job.index:06d}.bin"
        atomic_write_bytes(data_dir / name, raw)
        entry = {"file": name, "tokens": len(raw) // dtype.itemsize, "doc_start": job.doc_start,
                 "doc_end": job.doc_end, "sha256": hashlib.sha256(raw).hexdigest()}
        shards = [e for e in manifest["shards"][job.split] if e["doc_start"] != job.doc_start] + [entry]
        manifest["shards"][job.split] = sorted(shards, key=lambda e: e["doc_start"])
        atomic_write_text(data_dir / "manifest.json", json.dumps(manifest, indent=1))
        result.built += 1

    def needed(split: str, i: int) -> bool:
        """Whether document ``i`` of ``split`` must be encoded (it is in no shard that verified)."""
        return i >= ends[split] or any(s <= i < e["doc_end"] for s, e in rebuild[split].items())

    def job_for(split: str, i: int) -> _Job:
        """The shard document ``i`` of ``split`` goes to (called in document order, when it is encoded)."""
        for start, entry in rebuild[split].items():
            if start <= i < entry["doc_end"]:
                job = open_jobs[split]
                if job is None or job.doc_start != start:
                    index = int(entry["file"].split("_")[1].split(".")[0])
                    job = open_jobs[split] = _Job(split, index, start, entry["doc_end"])
                return job
        job = open_jobs[split]
        if job is None:
            index = len(manifest["shards"][split])
            job = open_jobs[split] = _Job(split, index, i)
        return job

    def batches() -> Iterator[list[tuple[str, int, str, str]]]:
        batch: list[tuple[str, int, str, str]] = []
        for index, doc in enumerate(clean_documents(raw_documents(data), data, stats)):
            split = plan.split(index, doc.text)
            i, counts[split] = counts[split], counts[split] + 1
            if needed(split, i):
                batch.append((split, i, doc.text, doc.origin))
            if len(batch) >= batch_docs:
                yield batch
                batch = []
        if batch:
            yield batch

    def consume(batch: list[tuple[str, int, str, str]], encoded: list[np.ndarray]) -> None:
        for (split, i, _, _), ids in zip(batch, encoded, strict=True):
            job = job_for(split, i)  # now, not when batched: earlier documents may have closed a shard
            job.parts.append(ids)
            job.tokens += ids.size
            if job.doc_end is not None:  # rebuilding a shard with a fixed range
                if i + 1 == job.doc_end:
                    write(job)
                    open_jobs[job.split] = None
            elif job.tokens >= data.shard_tokens:
                job.doc_end = i + 1
                write(job)
                open_jobs[job.split] = None
        if on_progress is not None:
            on_progress(len(batch), sum(len(t.encode("utf-8")) for _, _, t, _ in batch))

    workers = workers or data.workers or len(os.sched_getaffinity(0)) or 1
    batch_docs = BATCH_DOCS["inline" if workers == 1 else "pool"]
    stream = batches()
    def located(batch: list[tuple[str, int, str, str]], exc: CorekitError) -> CorekitError:
        """``exc`` with the document that caused it named (found by encoding one at a time)."""
        for _, _, text, origin in batch:
            try:
                tokenizer.encode(text, allow_special=False)
            except CorekitError as single:
                return CorekitError(f"{origin}: {single}")
        return exc

    if workers == 1:
        for batch in stream:
            try:
                encoded = encode_documents(tokenizer, [t for _, _, t, _ in batch], dtype, eot)
            except CorekitError as exc:
                raise located(batch, exc) from None
            consume(batch, encoded)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer, dtype, eot)) as pool:
            pending: list[tuple[list, Any]] = []
            for batch in stream:
                pending.append((batch, pool.apply_async(_encode, ([t for _, _, t, _ in batch],))))
                while len(pending) > 2 * workers or (pending and pending[0][1].ready()):
                    done, res = pending.pop(0)
                    consume(done, _result(res, done, located))
            for done, res in pending:
                consume(done, _result(res, done, located))
    for split in SPLITS:
        job = open_jobs[split]
        if job is not None and job.doc_end is None and job.parts:
            job.doc_end = counts[split]
            write(job)
    if stats.documents_out == 0:
        raise CorekitError(
            f"the corpus is empty after cleaning: {stats.documents_in} documents read, {stats.too_short} shorter "
            f"than data.min_chars={data.min_chars}, {stats.duplicates} duplicates"
        )
    for split in SPLITS:
        if counts[split] == 0:
            raise CorekitError(
                f"the {split} split is empty ({stats.documents_out} documents after cleaning, "
                f"data.val_fraction={data.val_fraction}); add documents or change data.val_fraction"
            )
    listed = {e["file"] for split in SPLITS for e in manifest["shards"][split]}
    for stale in data_dir.glob("*.bin"):  # shards of an earlier configuration
        if stale.name not in listed:
            stale.unlink()
    manifest["complete"] = True
    manifest["notes"] = [plan.note] if plan.note else []
    if plan.note:
        warnings.warn(f"data: {plan.note}", stacklevel=2)
    manifest["stats"] = stats.as_dict() | {
        split: {"documents": counts[split], "tokens": sum(e["tokens"] for e in manifest["shards"][split]),
                "shards": len(manifest["shards"][split])}
        for split in SPLITS
    }
    atomic_write_text(data_dir / "manifest.json", json.dumps(manifest, indent=1))
    return result
