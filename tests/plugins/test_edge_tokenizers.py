"""``Tokenizer.edge_json``: the HF ``tokenizers`` form of each tokenizer gives the same ids and text.

The edge runtime loads the JSON with ``tokenizers.Tokenizer.from_str`` and calls
``.encode(text).ids`` and ``.decode(ids, skip_special_tokens=False)``; these tests do exactly that.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from corekit_plugins.tokenizers import byte_level
from corekit_plugins.tokenizers.bpe import BPETokenizer
from corekit_plugins.tokenizers.byte_level import ByteTokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import processors

from corekit.errors import CorekitError
from corekit.tokenizer import Tokenizer

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
KINDS = ["bytes", "char", "bpe"]
CHAR_TEXT = "The quick brown fox jumps over the lazy dog.\nnaïve café\t  déjà vu, 1 + 2 = 3 <|x|>\n"
TEXTS = [
    "hello world",
    "The quick brown fox.",
    "café naïve déjà",  # multi-byte, all seen by the char tokenizer
    "中文 and emoji 😀🎉 👨‍👩‍👧 e\u0301",  # unseen by the char tokenizer
    "a\nb\r\n\tc   d  \n\n\t\t end ",
    "x<|endoftext|>y<|im_start|>z<|im_end|>",
    "<|endoftext|><|endoftext|> <|im_start|>",
    "<|endoftext|<|im_end|>|>endoftext|> <|im_",
    "",
    " ",
]
PIECES = st.one_of(
    st.text(max_size=8),
    st.text(alphabet=sorted(set(CHAR_TEXT)), max_size=8),
    st.sampled_from([*SPECIALS, "<|", "|>", "<|endoftext", "im_end|>", "\n", "\t", "  "]),
)
MIXED = st.lists(PIECES, max_size=10).map("".join)
SOME = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _corpus() -> list[str]:
    """A small generated training corpus: words, unicode, code-like lines and whitespace runs."""
    rng = random.Random(0)
    words = ["the", "quick", "brown", "fox", "def", "return", "import", "café", "日本語", "😀", "x", "+", "=", "(", ")"]
    gaps = [" ", "  ", "\n", "\t", "\n    ", ", "]
    return ["".join(rng.choice(words) + rng.choice(gaps) for _ in range(60)) for _ in range(40)]


@pytest.fixture(scope="module")
def toks(registry) -> dict[str, Tokenizer]:
    """One trained tokenizer of each kind, all with ``SPECIALS``."""
    return {
        "bytes": registry.build("tokenizer", {"name": "bytes", "special_tokens": SPECIALS}),
        "char": registry.build("tokenizer", {"name": "char", "special_tokens": SPECIALS}).train([CHAR_TEXT]),
        "bpe": registry.build("tokenizer", {"name": "bpe", "vocab_size": 400, "special_tokens": SPECIALS})
        .train(_corpus()),
    }


@pytest.fixture(scope="module")
def edges(toks) -> dict[str, HFTokenizer]:
    """Each tokenizer's edge form, loaded as the runtime loads it."""
    return {kind: HFTokenizer.from_str(tok.edge_json()) for kind, tok in toks.items()}


def _assert_same(tok: Tokenizer, hf: HFTokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert hf.encode(text).ids == ids
    assert hf.decode(ids, skip_special_tokens=False) == tok.decode(ids)


# --------------------------------------------------------------------------- all kinds
@pytest.mark.parametrize("kind", KINDS)
def test_vocab_and_special_ids_match(toks, edges, kind):
    tok, hf = toks[kind], edges[kind]
    assert hf.get_vocab_size(with_added_tokens=True) == tok.vocab_size
    for token, index in tok.special_tokens.items():
        assert hf.token_to_id(token) == index
        assert hf.decode([index], skip_special_tokens=False) == token


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("text", TEXTS)
def test_fixed_texts(toks, edges, kind, text):
    _assert_same(toks[kind], edges[kind], text)


@pytest.mark.parametrize("kind", KINDS)
@SOME
@given(text=st.text(max_size=200))
def test_any_text(toks, edges, kind, text):
    _assert_same(toks[kind], edges[kind], text)


@pytest.mark.parametrize("kind", KINDS)
@SOME
@given(text=MIXED)
def test_text_with_special_tokens(toks, edges, kind, text):
    _assert_same(toks[kind], edges[kind], text)


@pytest.mark.parametrize("kind", KINDS)
@SOME
@given(data=st.data())
def test_decode_random_ids(toks, edges, kind, data):
    tok = toks[kind]
    ids = data.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=60))
    assert edges[kind].decode(ids, skip_special_tokens=False) == tok.decode(ids)


@pytest.mark.parametrize("kind", KINDS)
def test_out_of_vocabulary_ids_are_the_documented_difference(toks, edges, kind):
    tok = toks[kind]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([5, tok.vocab_size])
    assert edges[kind].decode([5, tok.vocab_size], skip_special_tokens=False) == tok.decode([5])


def test_default_edge_json_names_the_class():
    class PlainTokenizer(Tokenizer):
        vocab_size = 1

        def __init__(self) -> None:
            self.special_tokens = {}

        def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
            return [0] * len(text)

        def decode(self, ids) -> str:
            return "x" * len(list(ids))

        def save(self, path: str | Path) -> Path:
            return Path(path)

        def load(self, path: str | Path) -> Tokenizer:
            return self

    with pytest.raises(CorekitError, match=r"PlainTokenizer.*edge_json"):
        PlainTokenizer().edge_json()


# --------------------------------------------------------------------------- bytes
def test_bytes_edge_ids_are_the_utf8_bytes(edges):
    assert edges["bytes"].encode("é!<|endoftext|>\n").ids == [0xC3, 0xA9, 0x21, 256, 0x0A]


def test_bytes_alphabet_is_gpt2s():
    from tokenizers.pre_tokenizers import ByteLevel

    table = byte_level._bytes_to_unicode()
    assert sorted(table) == list(range(256)) and set(table.values()) == set(ByteLevel.alphabet())
    assert (table[ord("a")], table[ord(" ")], table[0]) == ("a", "Ġ", "Ā")


@pytest.mark.parametrize(
    "ids",
    [[0xC3], [0xF0, 0x9F, 0x98], [0xE4, 256, 0xB8], [0xFF, 0xFE, 0x41], [0xED, 0xA0, 0x80], [0xC0, 0xAF],
     [0x80, 0x80, 257], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82, 0xAC, 0xE2, 0x82]],
)
def test_bytes_malformed_utf8_decodes_like_python(toks, edges, ids):
    text = edges["bytes"].decode(ids, skip_special_tokens=False)
    assert text == toks["bytes"].decode(ids)
    assert "\ufffd" in text


@SOME
@given(chunks=st.lists(st.one_of(st.binary(max_size=4), st.text(max_size=3).map(lambda t: t.encode()[1:])),
                      max_size=10))
def test_bytes_truncated_utf8_decodes_like_python(toks, edges, chunks):
    ids = [b for chunk in chunks for b in chunk] + [256]
    assert edges["bytes"].decode(ids, skip_special_tokens=False) == toks["bytes"].decode(ids)


@pytest.mark.parametrize("special", ["<|end of text|>", "<|中|>", "\x00", "<s>", "é中", "[PAD]"])
def test_bytes_unusual_special_tokens_that_work(special):
    tok = ByteTokenizer(["<|endoftext|>", special])
    hf = HFTokenizer.from_str(tok.edge_json())
    for text in [f"a{special}b", f"{special}{special}", "é<|endoftext|>", special[:-1]]:
        _assert_same(tok, hf, text)
    assert hf.decode([0xC3, 257, 0xA9], skip_special_tokens=False) == tok.decode([0xC3, 257, 0xA9])


@pytest.mark.parametrize("special", ["a", "Ġ", "<|é|>", "ĠĠ", "café"])
def test_bytes_special_tokens_hf_cannot_reproduce_are_refused(special, monkeypatch):
    tok = ByteTokenizer(["<|endoftext|>", special])
    with pytest.raises(CorekitError, match=f"'{special}'.*plain ASCII"):
        tok.edge_json()
    # the refusal is real: without it, the HF form gets the id or the text wrong
    monkeypatch.setattr(byte_level, "_survives_byte_level", lambda token, to_byte: True)
    hf = HFTokenizer.from_str(tok.edge_json())
    assert (hf.token_to_id(special), hf.decode([257], skip_special_tokens=False)) != (257, special)


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet="<|a>b ", max_size=40))
def test_bytes_overlapping_special_tokens_match_longest_first(text):
    tok = ByteTokenizer(["<|a|>", "<|a|>b", "a|>", "||"])
    _assert_same(tok, HFTokenizer.from_str(tok.edge_json()), text)


# --------------------------------------------------------------------------- char
def test_char_unknown_characters_map_to_unk(toks, edges):
    tok, hf = toks["char"], edges["char"]
    ids = hf.encode("a中😀b").ids
    assert ids == tok.encode("a中😀b")
    assert ids[1:3] == [tok.unk_id, tok.unk_id]
    assert hf.decode(ids, skip_special_tokens=False) == "a<|unk|><|unk|>b"


def test_char_splits_code_points_not_graphemes(toks, edges):
    text = "e\u0301\r\n"  # e + combining acute, CR LF: four code points, four ids
    assert len(edges["char"].encode(text).ids) == 4 == len(toks["char"].encode(text))


def test_char_untrained_is_a_clear_error(registry):
    with pytest.raises(CorekitError, match="not trained"):
        registry.build("tokenizer", "char").edge_json()


@pytest.mark.parametrize("specials", [["<|endoftext|>"], ["<|no-unk|>"]])
def test_char_unknown_error_raises_in_both(registry, specials):
    tok = registry.build("tokenizer", {"name": "char", "unknown": "error", "special_tokens": specials}).train(["abc\n"])
    hf = HFTokenizer.from_str(tok.edge_json())
    _assert_same(tok, hf, f"cab\n{specials[0]}ba")
    with pytest.raises(CorekitError):
        tok.encode("az")
    with pytest.raises(Exception, match="WordLevel"):
        hf.encode("az")


@pytest.mark.parametrize("params", [{"special_tokens": ["<|endoftext|>", "x"]}, {"unk_token": "?"}])
def test_char_string_with_two_ids_is_refused(registry, params):
    tok = registry.build("tokenizer", {"name": "char", **params}).train(["x?y"])
    with pytest.raises(CorekitError, match="has two ids"):
        tok.edge_json()


# --------------------------------------------------------------------------- bpe
def test_bpe_edge_json_is_the_wrapped_tokenizer(toks, edges):
    assert edges["bpe"].get_vocab() == toks["bpe"].hf.get_vocab(with_added_tokens=True)


def test_bpe_untrained_is_a_clear_error(registry):
    with pytest.raises(CorekitError, match="not trained"):
        registry.build("tokenizer", "bpe").edge_json()


def test_bpe_post_processor_is_dropped(toks):
    hf = HFTokenizer.from_str(toks["bpe"].hf.to_str())
    hf.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)])
    tok = BPETokenizer(toks["bpe"].params, hf)
    assert hf.encode("hi").ids[0] == 0 != tok.encode("hi")[0]  # plain encode would add the BOS
    _assert_same(tok, HFTokenizer.from_str(tok.edge_json()), "hi there")
