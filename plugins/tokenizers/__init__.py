"""Tokenizers:

- ``bytes``: the 256 byte values plus special tokens; needs no training, so text goes in
  and out of a model from day one (cf. ByT5, Xue et al. 2022).
- ``bpe``: byte-level BPE (Sennrich et al. 2016; byte-level as in GPT-2, Radford et al.
  2019) trained with HF ``tokenizers``; saved as a plain ``tokenizer.json``.
- ``char``: one id per character seen in training, with unknown characters mapped to a
  reserved id or refused, as the spec says.

Special tokens take the first ids (0, 1, ...) for ``bpe`` and ``char``, and the ids after
the 256 bytes for ``bytes``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator

from corekit import hookimpl
from corekit.params import TokenizerParams

BUILD = "corekit_plugins.tokenizers."


class BytesParams(TokenizerParams):
    """UTF-8 bytes as ids 0-255, special tokens from 256 on; nothing to train."""

    name: Literal["bytes"] = "bytes"

    def known_size(self) -> int:
        return 256 + len(self.special_tokens)


class BPEParams(TokenizerParams):
    """Byte-level BPE trained with HF tokenizers (GPT-2 pre-tokenization, no unknowns)."""

    name: Literal["bpe"] = "bpe"
    vocab_size: PositiveInt = Field(4096, description="target vocabulary size, special tokens and 256 bytes included")
    min_frequency: PositiveInt = Field(2, description="merges need a pair seen at least this often")
    max_train_bytes: PositiveInt | None = Field(
        None, description="train on at most this many bytes of text (None: the whole train split)"
    )

    @field_validator("vocab_size")
    @classmethod
    def _room_for_specials(cls, value: int, info: ValidationInfo) -> int:
        specials = info.data.get("special_tokens", [])
        needed = 256 + len(specials)
        if value < needed:
            raise ValueError(
                f"vocab_size={value} is too small: the 256 byte tokens and "
                f"{len(specials)} special token(s) need at least {needed}"
            )
        return value

    def known_size(self) -> int:
        return self.vocab_size


class CharParams(TokenizerParams):
    """One id per character seen in training; unknown characters as the spec says."""

    name: Literal["char"] = "char"
    unknown: Literal["error", "token"] = Field(
        "token", description="'token': map unseen characters to unk_token; 'error': refuse them"
    )
    unk_token: str = Field("<|unk|>", description="the id unseen characters map to (unknown = 'token')")
    min_frequency: PositiveInt = Field(1, description="characters seen fewer times are unknown")
    max_train_bytes: PositiveInt | None = Field(None, description="train on at most this many bytes of text")

    @model_validator(mode="after")
    def _unk_is_not_special(self) -> CharParams:
        if self.unknown == "token" and self.unk_token in self.special_tokens:
            raise ValueError(f"unk_token {self.unk_token!r} is also listed in special_tokens")
        return self


@hookimpl
def corekit_register_components(registry):
    registry.add("tokenizer", BytesParams, BUILD + "byte_level:build")
    registry.add("tokenizer", BPEParams, BUILD + "bpe:build")
    registry.add("tokenizer", CharParams, BUILD + "char_level:build")
