"""Shared helper: cap the text a tokenizer trains on."""

from __future__ import annotations

from typing import Iterable, Iterator


def cap_bytes(texts: Iterable[str], max_bytes: int | None) -> Iterator[str]:
    """Yield ``texts`` until about ``max_bytes`` of UTF-8 have passed (all if None)."""
    if max_bytes is None:
        yield from texts
        return
    seen = 0
    for text in texts:
        if seen >= max_bytes:
            return
        seen += len(text.encode("utf-8"))
        yield text
