"""The ``bytes`` tokenizer: every UTF-8 byte is a token, so any string round-trips.

Its edge form (:meth:`ByteTokenizer.edge_json`) is a HF ``tokenizers`` byte-level BPE with no
merges, using GPT-2's byte-to-unicode table (Radford et al. 2019, "Language Models are
Unsupervised Multitask Learners"; ``bytes_to_unicode`` in openai/gpt-2 ``src/encoder.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

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

    def edge_json(self) -> str:
        """A HF ``tokenizers`` JSON with the same ids and text (see :meth:`Tokenizer.edge_json`).

        Byte ``b`` is GPT-2's byte-level character ``_bytes_to_unicode()[b]`` at id ``b`` in a
        merge-free BPE; the special tokens are added tokens at 256, 257, ... Decoding joins
        the bytes between special tokens and replaces malformed UTF-8 exactly as
        ``bytes.decode("utf-8", errors="replace")`` does (one U+FFFD per maximal invalid
        subpart), so decode matches on every id list, malformed ones included.

        Raises:
            CorekitError: a special token that HF's byte-level decoder would turn into bytes:
                one character of the byte alphabet (it would take that byte's id), or made only
                of such characters but not plain ASCII (it would decode differently).
        """
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers

        to_char = _bytes_to_unicode()
        to_byte = {ch: b for b, ch in to_char.items()}
        bad = [t for t in self.special_tokens if not _survives_byte_level(t, to_byte)]
        if bad:
            raise CorekitError(
                f"the bytes tokenizer cannot be exported for the edge runtime: the special tokens {bad} "
                "would not keep their ids or text in a HF byte-level tokenizer, which reads tokens made "
                "only of its byte-alphabet characters (printable ASCII except space, most of Latin-1, "
                "U+0100-U+0143) as bytes; use special tokens of two or more plain ASCII characters, "
                "such as '<|endoftext|>'"
            )
        hf = HFTokenizer(models.BPE(vocab={to_char[b]: b for b in range(256)}, merges=[]))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        hf.decoder = decoders.ByteLevel()
        hf.add_special_tokens(list(self.special_tokens))  # ids 256, 257, ... in order
        return hf.to_str()

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


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table: printable bytes keep their code point,
    the other 68 bytes take U+0100, U+0101, ... in byte order."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in kept}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


def _survives_byte_level(token: str, to_byte: dict[str, int]) -> bool:
    """Whether ``token`` keeps its own id and text as a special token of a HF byte-level
    tokenizer, whose decoder turns a token made only of byte-alphabet characters into those
    bytes (and any other token into its UTF-8)."""
    if len(token) == 1 and token in to_byte:
        return False  # the byte's own token already has this string
    if all(ch in to_byte for ch in token):
        return bytes(to_byte[ch] for ch in token) == token.encode("utf-8")
    return True


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
