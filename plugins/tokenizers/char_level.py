"""The ``char`` tokenizer: one id per character seen in training.

Ids: the special tokens first, then ``unk_token`` (when unknowns map to a token), then the
characters in code-point order. Characters not in the vocabulary map to ``unk_token`` or
raise, as the spec's ``unknown`` says. The edge form (:meth:`CharTokenizer.edge_json`) is a
HF ``tokenizers`` word-level model over single code points.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from corekit_plugins.tokenizers.byte_level import _read_json
from corekit_plugins.tokenizers.limits import cap_bytes

from corekit.errors import CorekitError
from corekit.io import atomic_write_text
from corekit.tokenizer import Tokenizer

FORMAT = "corekit-char"


class CharTokenizer(Tokenizer):
    """Character-level tokenizer; untrained until :meth:`train` or :meth:`load`."""

    needs_training = True

    def __init__(self, params, chars: str | None = None) -> None:
        self.params = params
        self.chars = chars
        self.special_tokens = {tok: i for i, tok in enumerate(params.special_tokens)}
        self.unk_id = len(self.special_tokens) if params.unknown == "token" else None
        first = len(self.special_tokens) + (self.unk_id is not None)
        self._ids = {ch: first + i for i, ch in enumerate(chars or "")}
        self._by_id = {i: ch for ch, i in self._ids.items()} | {i: t for t, i in self.special_tokens.items()}
        if self.unk_id is not None:
            self._by_id[self.unk_id] = params.unk_token

    def _check_trained(self) -> None:
        if self.chars is None:
            raise CorekitError("the char tokenizer is not trained yet: run `corekit tokenizer train`")

    def train(self, texts: Iterable[str]) -> CharTokenizer:
        counts: Counter[str] = Counter()
        for text in cap_bytes(texts, self.params.max_train_bytes):
            counts.update(text)
        chars = "".join(sorted(ch for ch, n in counts.items() if n >= self.params.min_frequency))
        if not chars:
            raise CorekitError("the char tokenizer saw no characters to train on: the training text is empty")
        return CharTokenizer(self.params, chars)

    @property
    def vocab_size(self) -> int:
        self._check_trained()
        return len(self._by_id)

    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        self._check_trained()
        parts = self.split_special(text) if allow_special else [text]
        ids: list[int] = []
        offset = 0
        for part in parts:
            special = self.special_tokens.get(part) if allow_special else None
            if special is not None:
                ids.append(special)
            else:
                for k, ch in enumerate(part):
                    index = self._ids.get(ch)
                    if index is None:
                        if self.unk_id is None:
                            raise CorekitError(
                                f"character {ch!r} (U+{ord(ch):04X}) at position {offset + k} is not in the "
                                "char tokenizer's vocabulary (tokenizer.unknown = 'error')"
                            )
                        index = self.unk_id
                    ids.append(index)
            offset += len(part)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        self._check_trained()
        try:
            return "".join(self._by_id[int(i)] for i in ids)
        except KeyError as exc:
            raise ValueError(f"token id {exc.args[0]} is outside the vocabulary (size {self.vocab_size})") from None

    def edge_json(self) -> str:
        """A HF ``tokenizers`` JSON with the same ids and text (see :meth:`Tokenizer.edge_json`).

        A ``WordLevel`` model over this id table, a pre-tokenizer that isolates every code
        point (as iterating a Python ``str`` does: no grapheme clustering, ``"\\r\\n"`` is two
        tokens) and a ``Fuse`` decoder; the special tokens are added tokens at their ids.
        Unknown characters map to ``unk_token`` when ``unknown = 'token'``; with
        ``unknown = 'error'`` the HF tokenizer raises on them too (a plain ``Exception``,
        "WordLevel error: Missing [UNK] token from the vocabulary"), where :meth:`encode`
        raises :class:`CorekitError`.

        Raises:
            CorekitError: the tokenizer is not trained, or one string has two ids (a
                one-character special token or ``unk_token`` that is also a trained character).
        """
        self._check_trained()
        from tokenizers import Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        vocab: dict[str, int] = {}
        for index, text in sorted(self._by_id.items()):
            if text in vocab:
                raise CorekitError(
                    f"the char tokenizer cannot be exported for the edge runtime: {text!r} has two ids, "
                    f"{vocab[text]} and {index} (a special token or unk_token that is also a character of "
                    "the training text), and a HF tokenizer holds one id per string; pick special tokens "
                    "and an unk_token that are not single characters of the text, and retrain"
                )
            vocab[text] = index
        unk = self.params.unk_token if self.unk_id is not None else _absent_from(vocab)
        hf = HFTokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = decoders.Fuse()
        hf.add_special_tokens(list(self.special_tokens))  # already in vocab, so they keep their ids
        return hf.to_str()

    def save(self, path: str | Path) -> Path:
        self._check_trained()
        data = {"format": FORMAT, "version": 1, "params": self.params.model_dump(mode="json"), "chars": self.chars}
        return atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1))

    def load(self, path: str | Path) -> CharTokenizer:
        data = _read_json(path, FORMAT)
        saved = {k: data.get("params", {}).get(k) for k in ("special_tokens", "unknown", "unk_token")}
        expected = {k: getattr(self.params, k) for k in saved}
        if saved != expected:
            raise CorekitError(f"{path} was saved with {saved}, but the spec says {expected}")
        if not isinstance(data.get("chars"), str):
            raise CorekitError(f"{path} has no character table ('chars'); it is not a trained char tokenizer")
        return CharTokenizer(self.params, data["chars"])


def _absent_from(vocab: dict[str, int]) -> str:
    """An unk token string that is not in ``vocab``, so that unknown characters stay errors."""
    unk = "<|no-unk|>"
    while unk in vocab:
        unk += "!"
    return unk


def build(params) -> CharTokenizer:
    return CharTokenizer(params)
