"""Tokenizer plugins: ``bytes``, ``bpe`` and ``char``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corekit.errors import CorekitError

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "The quick brown fox jumps over the lazy dog. " * 20,
    "Ünïcödé text: naïve café, 日本語のテキスト, emoji 😀🎉, math ∑∫√.",
    "import os\nimport sys\n\nprint(os.getcwd(), sys.argv)\n" * 5,
    "flags = a < b | c > d_e",
]
UNICODE = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
ANY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tokenizers(registry):
    """One trained tokenizer of each kind."""
    return {
        "bytes": registry.build("tokenizer", {"name": "bytes", "special_tokens": SPECIALS}),
        "bpe": registry.build("tokenizer", {"name": "bpe", "vocab_size": 400, "special_tokens": SPECIALS})
        .train(CORPUS),
        "char": registry.build("tokenizer", {"name": "char", "special_tokens": SPECIALS}).train(CORPUS),
    }


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("kind", ["bytes", "bpe"])
@ANY_SETTINGS
@given(text=UNICODE)
def test_round_trip_any_unicode(tokenizers, kind, text):
    tok = tokenizers[kind]
    assert tok.decode(tok.encode(text, allow_special=False)) == text
    assert tok.decode(tok.encode(text)) == text  # specials in the text come back as the same string


@pytest.mark.parametrize("kind", ["bytes", "bpe"])
@ANY_SETTINGS
@given(data=st.binary(max_size=200))
def test_round_trip_byte_junk(tokenizers, kind, data):
    tok = tokenizers[kind]
    text = data.decode("utf-8", errors="replace")
    assert tok.decode(tok.encode(text)) == text


@ANY_SETTINGS
@given(text=st.text(alphabet="".join(sorted(set("".join(CORPUS)))), max_size=200))
def test_char_round_trips_its_alphabet(tokenizers, text):
    tok = tokenizers["char"]
    ids = tok.encode(text)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == text


def test_bytes_ids_are_the_utf8_bytes(tokenizers):
    assert tokenizers["bytes"].encode("é!", allow_special=False) == [0xC3, 0xA9, 0x21]


# --------------------------------------------------------------------------- special tokens
@pytest.mark.parametrize("kind", ["bytes", "bpe", "char"])
def test_special_tokens_have_fixed_ids_and_are_never_split(tokenizers, kind):
    tok = tokenizers[kind]
    first = 256 if kind == "bytes" else 0
    assert tok.special_tokens == {s: first + i for i, s in enumerate(SPECIALS)}
    assert tok.eot_id == first
    ids = tok.encode("ab<|im_start|>cd<|endoftext|>")
    assert ids.count(first + 1) == 1 and ids.count(first) == 1
    assert ids[-1] == first
    # allow_special=False: the same string becomes plain text, and no special id appears
    literal = tok.encode("ab<|im_start|>cd", allow_special=False)
    assert not set(literal) & set(tok.special_tokens.values())
    assert tok.decode(literal) == "ab<|im_start|>cd"


@pytest.mark.parametrize("kind", ["bytes", "bpe", "char"])
def test_save_load_keeps_ids(registry, tokenizers, kind, tmp_path):
    tok = tokenizers[kind]
    path = tok.save(tmp_path / "tokenizer.json")
    blank = registry.build("tokenizer", {"name": kind, "special_tokens": SPECIALS,
                                         **({"vocab_size": 400} if kind == "bpe" else {})})
    again = blank.load(path)
    assert again.special_tokens == tok.special_tokens
    assert again.vocab_size == tok.vocab_size
    for text in CORPUS + ["x<|im_end|>y"]:
        assert again.encode(text) == tok.encode(text)


@pytest.mark.parametrize("kind", ["bytes", "bpe", "char"])
def test_load_refuses_other_special_tokens(registry, tokenizers, kind, tmp_path):
    path = tokenizers[kind].save(tmp_path / "tokenizer.json")
    blank = registry.build("tokenizer", {"name": kind, "special_tokens": ["<|other|>"]})
    with pytest.raises(CorekitError):
        blank.load(path)


@pytest.mark.parametrize("kind", ["bytes", "bpe", "char"])
def test_load_reports_unreadable_files(registry, kind, tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(CorekitError, match="tokenizer"):
        registry.build("tokenizer", kind).load(bad)


def test_encode_batch_equals_encode(tokenizers):
    for tok in tokenizers.values():
        assert tok.encode_batch(CORPUS, allow_special=False) == [tok.encode(t, allow_special=False) for t in CORPUS]
        texts = ["a<|im_end|>b", "plain"]
        assert tok.encode_batch(texts, allow_special=False) == [tok.encode(t, allow_special=False) for t in texts]


# --------------------------------------------------------------------------- bpe specifics
def test_bpe_file_loads_in_plain_tokenizers_and_hf(tokenizers, tmp_path):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = tokenizers["bpe"]
    path = tok.save(tmp_path / "tokenizer.json")
    plain = Tokenizer.from_file(str(path))
    fast = PreTrainedTokenizerFast(tokenizer_file=str(path))
    for text in CORPUS + ["x<|im_start|>y"]:
        assert plain.encode(text).ids == tok.encode(text)
        assert fast(text)["input_ids"] == tok.encode(text)
        assert plain.decode(tok.encode(text), skip_special_tokens=False) == text


def test_bpe_learns_merges_and_respects_vocab_size(tokenizers):
    tok = tokenizers["bpe"]
    assert 256 + len(SPECIALS) < tok.vocab_size <= 400
    text = "The quick brown fox"
    assert len(tok.encode(text)) < len(text.encode())  # merges shorten the common text


def test_bpe_is_deterministic(registry):
    params = {"name": "bpe", "vocab_size": 350}
    a = registry.build("tokenizer", params).train(CORPUS)
    b = registry.build("tokenizer", params).train(CORPUS)
    assert a.hf.to_str() == b.hf.to_str()


def test_bpe_max_train_bytes_limits_training_text(registry):
    capped = registry.build("tokenizer", {"name": "bpe", "vocab_size": 400, "max_train_bytes": 10}).train(CORPUS)
    full = registry.build("tokenizer", {"name": "bpe", "vocab_size": 400}).train(CORPUS)
    assert capped.vocab_size < full.vocab_size


def test_untrained_bpe_is_a_clear_error(registry):
    with pytest.raises(CorekitError, match="not trained"):
        registry.build("tokenizer", "bpe").encode("x")


def test_bpe_vocab_must_hold_bytes_and_specials(registry):
    from corekit.errors import SpecError
    from corekit.spec import load_spec

    with pytest.raises(SpecError) as info:
        load_spec({"model": {"attention": {"n_heads": 4}},
                   "tokenizer": {"name": "bpe", "vocab_size": 257, "special_tokens": ["a", "b"]}}, registry=registry)
    assert [i.path for i in info.value.issues] == ["tokenizer.vocab_size"]
    assert "258" in str(info.value)


# --------------------------------------------------------------------------- char specifics
def test_char_unknown_maps_to_reserved_id(tokenizers):
    tok = tokenizers["char"]
    assert tok.unk_id == len(SPECIALS)
    ids = tok.encode("a\u2603b")  # the snowman is not in the corpus
    assert ids[1] == tok.unk_id
    assert tok.decode(ids) == "a<|unk|>b"


def test_char_unknown_error(registry):
    tok = registry.build("tokenizer", {"name": "char", "unknown": "error"}).train(["abc"])
    assert tok.encode("cab") == [tok.encode(c)[0] for c in "cab"]
    with pytest.raises(CorekitError, match=r"'z'.*position 1"):
        tok.encode("az")


def test_char_vocab_is_specials_unk_then_sorted_chars(registry):
    tok = registry.build("tokenizer", {"name": "char", "special_tokens": ["<|endoftext|>"]}).train(["cab", "bca"])
    assert tok.vocab_size == 1 + 1 + 3
    assert tok.encode("abc") == [2, 3, 4]


def test_char_min_frequency(registry):
    tok = registry.build("tokenizer", {"name": "char", "min_frequency": 2}).train(["aab", "a"])
    assert tok.encode("b") == [tok.unk_id]


def test_char_empty_training_text(registry):
    with pytest.raises(CorekitError, match="empty"):
        registry.build("tokenizer", "char").train([])


def test_out_of_range_ids(tokenizers):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizers["bytes"].decode([300])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizers["char"].decode([10_000])


def test_vocab_size_defaults_from_tokenizer_with_padding(registry):
    from corekit.spec import load_spec

    spec = load_spec({"model": {"attention": {"n_heads": 4}, "pad_vocab_multiple": 64},
                      "tokenizer": {"name": "bytes", "special_tokens": ["a", "b", "c"]}}, registry=registry)
    assert spec.model.vocab_size == 320  # 259 rounded up to a multiple of 64
    spec = load_spec({"model": {"attention": {"n_heads": 4}}, "tokenizer": {"name": "bpe", "vocab_size": 1000}},
                     registry=registry)
    assert spec.model.vocab_size == 1000


def test_bpe_decode_checks_ids(tokenizers):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizers["bpe"].decode([90, 99_999, 91])


def test_char_load_needs_its_table(registry, tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"format": "corekit-char", "params": {"special_tokens": ["<|endoftext|>"], '
                    '"unknown": "token", "unk_token": "<|unk|>"}}')
    with pytest.raises(CorekitError, match="character table"):
        registry.build("tokenizer", "char").load(path)
