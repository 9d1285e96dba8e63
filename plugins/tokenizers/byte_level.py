"""The ``bytes`` tokenizer: every UTF-8 byte is a token, so any string round-trips."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from corekit.errors import CorekitError
from corekit.io import atomic_write_text
from corekit.tokenizer import Tokenizer

FORMAT = "corekit-bytes"


class ByteTokenizer(Tokenizer):
    """Ids 0-255 are bytes; special tokens take ids 256, 257, ... in the order given."""

    def __init__(self, special_tokens: list[str]) -> None:
        if len(set(special_tokens)) != len(special_tokens):
            raise CorekitError(f"special tokens must be distinct, got {special_tokens}")
        self.special_tokens = {tok: 256 + i for i, tok in enumerate(special_tokens)}
        self._by_id = {i: tok for tok, i in self.special_tokens.items()}

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.special_tokens)

    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        if not allow_special:
            return list(text.encode("utf-8"))
        ids: list[int] = []
        for part in self.split_special(text):
            special = self.special_tokens.get(part)
            if special is not None:
                ids.append(special)
            else:
                ids.extend(part.encode("utf-8"))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        out, pending = [], bytearray()
        for i in ids:
            i = int(i)
            if 0 <= i < 256:
                pending.append(i)
                continue
            out.append(pending.decode("utf-8", errors="replace"))
            pending = bytearray()
            if i not in self._by_id:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
            out.append(self._by_id[i])
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def save(self, path: str | Path) -> Path:
        data = {"format": FORMAT, "version": 1, "special_tokens": list(self.special_tokens)}
        return atomic_write_text(path, json.dumps(data, indent=2))

    def load(self, path: str | Path) -> ByteTokenizer:
        data = _read_json(path, FORMAT)
        loaded = ByteTokenizer(list(data.get("special_tokens", [])))
        if loaded.special_tokens != self.special_tokens:
            raise CorekitError(
                f"{path} has special tokens {list(loaded.special_tokens)}, but the spec says "
                f"{list(self.special_tokens)}"
            )
        return loaded


def _read_json(path: str | Path, fmt: str) -> dict:
    """A corekit tokenizer file's JSON, checked to be of format ``fmt``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorekitError(f"cannot read tokenizer {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise CorekitError(f"{path} is not a corekit tokenizer of format {fmt!r}")
    return data


def build(params) -> ByteTokenizer:
    return ByteTokenizer(params.special_tokens)
