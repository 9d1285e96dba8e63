"""Byte-level BPE on HF ``tokenizers``.

Pre-tokenization is GPT-2's (``ByteLevel`` with its regex), the initial alphabet is all
256 byte symbols, and there is no normaliser, so every string round-trips and nothing is
unknown. Special tokens are the trainer's first ids and are matched before
pre-tokenization, so they are never split. The saved file is a plain ``tokenizer.json``:
``tokenizers.Tokenizer.from_file`` and ``transformers.PreTrainedTokenizerFast`` load it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from corekit_plugins.tokenizers.limits import cap_bytes
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from corekit.errors import CorekitError
from corekit.io import atomic_write_text
from corekit.tokenizer import Tokenizer


class BPETokenizer(Tokenizer):
    """A byte-level BPE tokenizer; untrained until :meth:`train` or :meth:`load`."""

    needs_training = True

    def __init__(self, params, hf: HFTokenizer | None = None) -> None:
        self.params = params
        self.hf = hf
        self.special_tokens = {tok: i for i, tok in enumerate(params.special_tokens)}

    def _trained(self) -> HFTokenizer:
        if self.hf is None:
            raise CorekitError("the bpe tokenizer is not trained yet: run `corekit tokenizer train`")
        return self.hf

    @staticmethod
    def _blank() -> HFTokenizer:
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        return hf

    def train(self, texts: Iterable[str]) -> BPETokenizer:
        hf = self._blank()
        trainer = trainers.BpeTrainer(
            vocab_size=self.params.vocab_size,
            min_frequency=self.params.min_frequency,
            special_tokens=list(self.params.special_tokens),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(cap_bytes(texts, self.params.max_train_bytes), trainer)
        return BPETokenizer(self.params, hf)

    @property
    def vocab_size(self) -> int:
        return self._trained().get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        hf = self._trained()
        if allow_special or not any(s in text for s in self.special_tokens):
            return hf.encode(text, add_special_tokens=False).ids
        return self._encode_literally(text)

    def encode_batch(self, texts: list[str], *, allow_special: bool = True) -> list[list[int]]:
        hf = self._trained()
        if allow_special or not any(s in t for t in texts for s in self.special_tokens):
            return [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
        return [self.encode(t, allow_special=False) for t in texts]

    def _encode_literally(self, text: str) -> list[int]:
        # HF matches added tokens everywhere; encode a special token's text one character
        # at a time so that it stays plain text (it still decodes to the same string).
        ids: list[int] = []
        for part in self.split_special(text):
            if part in self.special_tokens:
                for ch in part:
                    ids.extend(self.hf.encode(ch, add_special_tokens=False).ids)
            else:
                ids.extend(self.hf.encode(part, add_special_tokens=False).ids)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        hf = self._trained()
        ids = [int(i) for i in ids]
        size = hf.get_vocab_size(with_added_tokens=True)
        bad = [i for i in ids if not 0 <= i < size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (size {size})")
        return hf.decode(ids, skip_special_tokens=False)

    def edge_json(self) -> str:
        """The wrapped HF tokenizer's JSON (see :meth:`Tokenizer.edge_json`).

        :meth:`encode` and :meth:`decode` are that tokenizer's own ``encode`` (with
        ``add_special_tokens=False``) and ``decode``, so the JSON reproduces them; only its
        post-processor is dropped, because the runtime's plain ``.encode(text)`` would run one
        (a loaded ``tokenizer.json`` may carry one, e.g. to add a BOS) and :meth:`encode` never
        does. Malformed UTF-8 and special tokens made of byte-alphabet characters decode as in
        :meth:`decode`, since both are HF's byte-level decoder.

        Raises:
            CorekitError: the tokenizer is not trained.
        """
        data = json.loads(self._trained().to_str())
        data["post_processor"] = None
        return json.dumps(data, ensure_ascii=False)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, self._trained().to_str(pretty=True))

    def load(self, path: str | Path) -> BPETokenizer:
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for bad files
            raise CorekitError(f"cannot read bpe tokenizer {path}: {exc}") from None
        for token, index in self.special_tokens.items():
            if hf.token_to_id(token) != index:
                raise CorekitError(
                    f"{path}: special token {token!r} has id {hf.token_to_id(token)}, the spec expects {index}"
                )
        return BPETokenizer(self.params, hf)


def build(params) -> BPETokenizer:
    return BPETokenizer(params)


def vocab_of(path: str | Path) -> dict[str, int]:
    """The token -> id table of a saved tokenizer.json (for inspection and tests)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["model"]["vocab"]
