"""The ``bytes`` tokenizer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corekit.errors import CorekitError


@pytest.fixture(scope="module")
def tok(registry):
    return registry.build("tokenizer", {"name": "bytes", "special_tokens": ["<|endoftext|>", "<|user|>"]})


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_round_trip_any_unicode(tok, text):
    assert tok.decode(tok.encode(text, allow_special=False)) == text


@settings(max_examples=200, deadline=None)
@given(data=st.binary())
def test_ids_are_the_utf8_bytes(tok, data):
    text = data.decode("utf-8", errors="replace")
    assert tok.encode(text, allow_special=False) == list(text.encode("utf-8"))


def test_special_tokens_have_fixed_ids_and_are_never_split(tok):
    assert tok.vocab_size == 258
    assert tok.special_tokens == {"<|endoftext|>": 256, "<|user|>": 257}
    assert tok.eot_id == 256
    ids = tok.encode("a<|user|>b<|endoftext|>")
    assert ids == [97, 257, 98, 256]
    assert tok.decode(ids) == "a<|user|>b<|endoftext|>"
    # not special when special handling is off: plain bytes
    assert tok.encode("<|user|>", allow_special=False) == list(b"<|user|>")


def test_invalid_utf8_decodes_with_replacement(tok):
    assert tok.decode([0xFF, 104, 105]) == "\ufffdhi"


def test_out_of_range_id_is_an_error(tok):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([300])


def test_save_load_keeps_special_ids(tok, tmp_path):
    from corekit_plugins.tokenizers.byte_level import ByteTokenizer

    path = tok.save(tmp_path / "tokenizer.json")
    again = ByteTokenizer.load(path)
    assert again.special_tokens == tok.special_tokens
    assert again.encode("x<|user|>") == tok.encode("x<|user|>")


def test_load_rejects_other_files(tmp_path):
    from corekit_plugins.tokenizers.byte_level import ByteTokenizer

    bad = tmp_path / "t.json"
    bad.write_text('{"format": "something-else"}')
    with pytest.raises(CorekitError, match="not a corekit bytes tokenizer"):
        ByteTokenizer.load(bad)
    with pytest.raises(CorekitError, match="cannot read"):
        ByteTokenizer.load(tmp_path / "missing.json")


def test_known_size_sets_model_vocab(registry):
    from corekit.spec import load_spec

    spec = load_spec({"model": {"attention": {"n_heads": 4}}, "tokenizer": {"name": "bytes", "special_tokens": ["a", "b", "c"]}}, registry=registry)
    assert spec.model.vocab_size == 259
