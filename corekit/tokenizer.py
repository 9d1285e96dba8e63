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


class AddedTokens(Tokenizer):
    """A trained tokenizer with special tokens appended after its vocabulary (ids
    ``base.vocab_size``, ``base.vocab_size + 1``, ...), as fine-tuning templates need them;
    HF ``tokenizers`` calls these added tokens. The base keeps its own file: the added tokens
    live in the spec (``tokenizer.added_tokens``), so the base's ids never move."""

    def __init__(self, base: Tokenizer, added: list[str]) -> None:
        clash = [t for t in added if t in base.special_tokens]
        if clash:
            raise CorekitError(f"added tokens {clash} are already special tokens of the tokenizer")
        self.base = base
        self.added = list(added)
        self.needs_training = base.needs_training  # type: ignore[misc]  # a class constant, set per instance here

    @property
    def special_tokens(self) -> dict[str, int]:  # type: ignore[override]  # computed: a property, not an attribute
        first = self.base.vocab_size
        return {**self.base.special_tokens, **{tok: first + i for i, tok in enumerate(self.added)}}

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(self.added)

    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        if not allow_special:
            return self.base.encode(text, allow_special=False)
        ids: list[int] = []
        added = {tok: self.base.vocab_size + i for i, tok in enumerate(self.added)}
        for part in _split(text, list(added)):
            ids.extend([added[part]] if part in added else self.base.encode(part))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        first, out, pending = self.base.vocab_size, [], []
        for i in ids:
            i = int(i)
            if i < first:
                pending.append(i)
                continue
            if i >= self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
            out += [self.base.decode(pending), self.added[i - first]]
            pending = []
        return "".join([*out, self.base.decode(pending)])

    def save(self, path: str | Path) -> Path:
        return self.base.save(path)

    def load(self, path: str | Path) -> AddedTokens:
        return AddedTokens(self.base.load(path), self.added)

    def train(self, texts: Iterable[str]) -> AddedTokens:
        return AddedTokens(self.base.train(texts), self.added)

    def edge_json(self) -> str:
        """The base's HF JSON with the added tokens appended as special added tokens."""
        from tokenizers import Tokenizer as HFTokenizer

        hf = HFTokenizer.from_str(self.base.edge_json())
        hf.add_special_tokens(self.added)
        wrong = {t: hf.token_to_id(t) for t, i in self.special_tokens.items() if hf.token_to_id(t) != i}
        if wrong:
            raise CorekitError(
                f"the added tokens cannot be exported for the edge runtime: HF tokenizers gives them ids {wrong}, "
                f"corekit expects {self.special_tokens}"
            )
        return hf.to_str()


def _split(text: str, tokens: list[str]) -> list[str]:
    if not tokens:
        return [text]
    pattern = "(" + "|".join(re.escape(s) for s in sorted(tokens, key=len, reverse=True)) + ")"
    return [part for part in re.split(pattern, text) if part]


def with_added_tokens(tokenizer: Tokenizer, added: list[str]) -> Tokenizer:
    """``tokenizer`` with the special tokens ``added`` after its vocabulary (itself if none)."""
    return AddedTokens(tokenizer, added) if added else tokenizer
