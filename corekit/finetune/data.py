"""Fine-tuning examples from CSV or JSONL files, checked record by record.

Every problem names the file and the line (``data/train.jsonl:12: missing field 'output'``),
so a malformed file is fixed in one pass. The forms:

- classify: ``text`` and ``label`` (field names configurable), CSV with a header or JSONL;
- instruct: Alpaca ``{"instruction", "input"?, "output"}`` or chat
  ``{"messages": [{"role", "content"}, ...]}``, JSONL;
- preference: ``{"prompt", "chosen", "rejected"}``, JSONL.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from corekit.errors import CorekitError
from corekit.finetune.template import ROLES


class DataError(CorekitError):
    """A fine-tuning data file that cannot be used (the message names the file and line)."""


@dataclass(frozen=True)
class Record:
    """One example as read: where it came from and its fields."""

    path: str
    line: int
    fields: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def read_records(path: str | Path) -> list[Record]:
    """The records of a ``.csv`` (header row, then one record per row) or ``.jsonl``/``.json``
    (one JSON object per line; blank lines skipped) file.

    Raises:
        DataError: a missing or empty file, an unknown suffix, a line that is not a JSON object,
            a CSV row with the wrong number of cells.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            records = _read_csv(path)
        elif suffix in (".jsonl", ".json", ".ndjson"):
            records = _read_jsonl(path)
        else:
            raise DataError(f"{path}: unknown data format {suffix or '(no suffix)'!r}; use .csv or .jsonl")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not records:
        raise DataError(f"{path}: the file holds no examples")
    return records


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    with path.open(encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(value, dict):
                raise DataError(f"{path}:{number}: expected a JSON object per line, got {type(value).__name__}")
            records.append(Record(str(path), number, value))
    return records


def _read_csv(path: Path) -> list[Record]:
    records = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        header = [h.strip() for h in header]
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}:{reader.line_num}: {len(row)} cells, but the header has {len(header)} "
                    f"({', '.join(header)}); "
                    "quote cells that contain commas"
                )
            records.append(Record(str(path), reader.line_num, dict(zip(header, row))))
    return records


def _text(record: Record, field: str, what: str) -> str:
    if field not in record.fields:
        raise DataError(
            f"{record.where}: missing field {field!r} ({what}; found {', '.join(map(repr, record.fields)) or 'none'})"
        )
    value = record.fields[field]
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # a JSON number: its text
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f"{record.where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- classify
def classify_examples(records: Sequence[Record], text_field: str, label_field: str) -> list[tuple[str, str, Record]]:
    """``(text, label, record)`` for each record; labels as strings (JSON numbers too)."""
    what = f"classify records need {text_field!r} and {label_field!r}"
    out = []
    for rec in records:
        text = _text(rec, text_field, what)
        if not text:
            raise DataError(f"{rec.where}: field {text_field!r} is empty")
        label = _text(rec, label_field, what).strip()
        if not label:
            raise DataError(f"{rec.where}: field {label_field!r} is empty")
        out.append((text, label, rec))
    return out


def label_ids(examples: Sequence[tuple[str, str, Record]], labels: Sequence[str]) -> list[int]:
    """The id of each example's label in ``labels``.

    Raises:
        DataError: a label not among ``labels`` (with file and line).
    """
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for _, label, rec in examples:
        if label not in index:
            raise DataError(
                f"{rec.where}: label {label!r} is not one of the model's labels ({', '.join(map(repr, labels))}); "
                "a classifier only predicts labels it was trained on"
            )
        out.append(index[label])
    return out


def text_ids(tokenizer, text: str, limit: int) -> list[int]:
    """A classifier's input ids for ``text``: encoded as the edge runtime encodes it, cut to ``limit``."""
    return tokenizer.encode(text)[:limit] or [0]


# --------------------------------------------------------------------------- instruct
def conversation(record: Record) -> list[dict[str, str]]:
    """The messages of an Alpaca or chat record (an Alpaca record becomes user + assistant)."""
    fields = record.fields
    if "messages" in fields:
        messages = fields["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{record.where}: 'messages' must be a non-empty list of {{role, content}} objects")
        out = []
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or not isinstance(msg.get("content"), str) or msg.get("role") not in ROLES:
                raise DataError(
                    f"{record.where}: messages[{i}] must be an object with 'role' ({' | '.join(ROLES)}) and string "
                    f"'content', got {json.dumps(msg)[:80]}"
                )
            out.append({"role": msg["role"], "content": msg["content"]})
        return out
    if "instruction" not in fields and "output" not in fields:
        raise DataError(
            f"{record.where}: not an instruction record: expected Alpaca fields 'instruction', 'output' (and "
            f"optional 'input') or chat 'messages'; found {', '.join(map(repr, fields)) or 'none'}"
        )
    what = "Alpaca records need 'instruction' and 'output' ('input' optional)"
    user = {"role": "user", "content": _text(record, "instruction", what)}
    extra = fields.get("input")
    if extra not in (None, ""):
        user["input"] = _text(record, "input", what)
    return [user, {"role": "assistant", "content": _text(record, "output", what)}]


# --------------------------------------------------------------------------- preference
def preference_triple(record: Record) -> tuple[str, str, str]:
    """``(prompt, chosen, rejected)`` of a preference record."""
    what = "preference records need 'prompt', 'chosen' and 'rejected'"
    prompt, chosen, rejected = (_text(record, f, what) for f in ("prompt", "chosen", "rejected"))
    return prompt, chosen, rejected


def split(
    records: list[Record], val_path: str | None, val_fraction: float, seed: int
) -> tuple[list[Record], list[Record]]:
    """Train and validation records: ``val_path``'s, or a seeded ``val_fraction`` of ``records``
    (at least one of each when there are two or more)."""
    if val_path is not None:
        return records, read_records(val_path)
    if len(records) < 2:
        raise DataError(f"{records[0].path}: one example cannot be split into train and validation; add examples "
                        "or give finetune.data.val")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(len(records) * val_fraction)), len(records) - 1)
    held = set(order[:n_val])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]
