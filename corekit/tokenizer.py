"""The interface every tokenizer component implements."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path

EOT = "<|endoftext|>"


class Tokenizer(ABC):
    """Text <-> token ids, with special tokens at fixed ids that are never split."""

    #: special token string -> id
    special_tokens: dict[str, int]

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""

    @abstractmethod
    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        """Token ids of ``text``; special-token strings map to their ids if ``allow_special``."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``."""

    @abstractmethod
    def save(self, path: str | Path) -> Path:
        """Write the tokenizer to one file (atomically) and return its path."""

    def encode_batch(self, texts: list[str], *, allow_special: bool = True) -> list[list[int]]:
        """:meth:`encode` for many texts."""
        return [self.encode(t, allow_special=allow_special) for t in texts]

    @property
    def eot_id(self) -> int | None:
        """Id of ``<|endoftext|>``, if this tokenizer has it."""
        return self.special_tokens.get(EOT)

    def split_special(self, text: str) -> list[str]:
        """``text`` cut into plain chunks and whole special tokens (longest match first)."""
        if not self.special_tokens:
            return [text]
        names = sorted(self.special_tokens, key=len, reverse=True)
        pattern = "(" + "|".join(re.escape(s) for s in names) + ")"
        return [part for part in re.split(pattern, text) if part]
