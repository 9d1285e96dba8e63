"""The interface every tokenizer component implements.

A tokenizer plugin's ``build(params)`` returns a :class:`Tokenizer`, untrained when
``needs_training`` is set; :meth:`Tokenizer.train` returns a trained one and
:meth:`Tokenizer.load` reads one saved by :meth:`Tokenizer.save` (one file).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from corekit.errors import CorekitError

EOT = "<|endoftext|>"


class Tokenizer(ABC):
    """Text <-> token ids, with special tokens at fixed ids that are never split."""

    #: whether :meth:`train` must run before the tokenizer can encode
    needs_training: ClassVar[bool] = False
    #: special token string -> id
    special_tokens: dict[str, int]

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""

    @abstractmethod
    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        """Token ids of ``text``. Special-token strings map to their ids if ``allow_special``,
        else they are encoded as plain text."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``."""

    @abstractmethod
    def save(self, path: str | Path) -> Path:
        """Write the tokenizer to one file (atomically) and return its path."""

    @abstractmethod
    def load(self, path: str | Path) -> Tokenizer:
        """A tokenizer of this kind and these parameters read from ``path``."""

    def train(self, texts: Iterable[str]) -> Tokenizer:
        """A tokenizer trained on ``texts`` (this one, if nothing needs training)."""
        return self

    def encode_batch(self, texts: list[str], *, allow_special: bool = True) -> list[list[int]]:
        """:meth:`encode` for many texts."""
        return [self.encode(t, allow_special=allow_special) for t in texts]

    def edge_json(self) -> str:
        """This tokenizer as a HF ``tokenizers`` ``tokenizer.json``, for the torch-free edge runtime.

        The runtime loads the text with ``tokenizers.Tokenizer.from_str(text)`` and calls
        ``.encode(text).ids`` and ``.decode(ids, skip_special_tokens=False)``. For every string,
        special tokens in it included, ``.encode(text).ids`` must equal :meth:`encode` with
        ``allow_special=True`` (the default), and for every list of ids inside the vocabulary
        ``.decode`` must equal :meth:`decode`. Ids outside the vocabulary are the one allowed
        difference: :meth:`decode` raises ``ValueError``, HF ``tokenizers`` silently drops them,
        so the runtime has to range-check ids itself.

        Returns:
            The JSON text.

        Raises:
            CorekitError: this tokenizer cannot describe itself that way (the default), is not
                trained, or has a vocabulary no HF tokenizer reproduces exactly.
        """
        raise CorekitError(
            f"the tokenizer {type(self).__name__} cannot be exported for the edge runtime: exporting "
            "needs a tokenizer that can describe itself as a HF `tokenizers` JSON (a class that "
            "overrides `edge_json`), e.g. the built-in bytes, char and bpe tokenizers."
        )

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
