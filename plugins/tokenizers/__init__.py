"""Tokenizers. ``bytes``: the 256 byte values plus special tokens; needs no training, so
text goes in and out of a model from day one (cf. ByT5, Xue et al. 2022)."""

from __future__ import annotations

from typing import Literal

from corekit import hookimpl
from corekit.params import TokenizerParams


class BytesParams(TokenizerParams):
    """UTF-8 bytes as ids 0-255, special tokens from 256 on; nothing to train."""

    name: Literal["bytes"] = "bytes"

    def known_size(self) -> int:
        return 256 + len(self.special_tokens)


def build_bytes(params: BytesParams):
    from corekit_plugins.tokenizers.byte_level import ByteTokenizer

    return ByteTokenizer(params.special_tokens)


@hookimpl
def corekit_register_components(registry):
    registry.add("tokenizer", BytesParams, build_bytes)
