"""corekit.tomlpos.key_line: line numbers of keys in TOML source, checked on a realistic spec."""

from __future__ import annotations

import tomllib

import pytest

from corekit.tomlpos import key_line

SPEC = '''\
# A fine-tuning spec.
title = "demo"  # [not.a.table]

[model]
context_length = 256
"d_model" = 128
n_layers = 4
mlp.hidden_dim = 512
mlp.activation = { name = "gelu", approximate = "tanh" }

[model.attention]
name = "mha"
n_heads = 4

[finetune]
task = "instruct"
template = { name = "alpaca", system = "Be [brief]." }
stop_words = [
  "###",
[ "nested", "list" ],
  # [finetune.fake] a comment in an array
  """a multi-line string
[finetune.inside_string]
= still the string""",
]
notes = """
[[compress]]
name = "not a table"
"""
'literal key' = 'C:\\path'

[finetune.adapter]
name = "lora"
rank = 8
targets = ["q", "v"]

[[compress]]
method = "prune"
options = { sparsity = 0.5 }

[compress.schedule]
steps = 10

[[compress]]
method = "quantize"
bits = 4
'''

# The lines, by hand.
L_TITLE, L_MODEL, L_CONTEXT, L_D_MODEL, L_HIDDEN, L_ACTIVATION = 2, 4, 5, 6, 8, 9
L_ATTENTION, L_ATT_NAME, L_N_HEADS = 11, 12, 13
L_FINETUNE, L_TASK, L_TEMPLATE, L_STOP_WORDS, L_NOTES, L_LITERAL = 15, 16, 17, 18, 26, 30
L_ADAPTER, L_ADAPTER_NAME, L_RANK, L_TARGETS = 32, 33, 34, 35
L_COMPRESS_0, L_METHOD_0, L_OPTIONS_0, L_SCHEDULE_0, L_STEPS_0 = 37, 38, 39, 41, 42
L_COMPRESS_1, L_METHOD_1, L_BITS_1 = 44, 45, 46


def line_text(n: int) -> str:
    return SPEC.splitlines()[n - 1].strip()


def test_spec_is_valid_toml_and_line_numbers_are_right():
    """The test text itself: valid TOML, and the hand-written line numbers point where meant."""
    data = tomllib.loads(SPEC)
    assert data["finetune"]["template"]["name"] == "alpaca"
    assert len(data["compress"]) == 2 and data["compress"][0]["schedule"]["steps"] == 10
    assert len(data["finetune"]["stop_words"]) == 3
    assert "[[compress]]" in data["finetune"]["notes"]
    assert "finetune" in data and "fake" not in data["finetune"] and "inside_string" not in data["finetune"]
    assert line_text(L_MODEL).startswith("[model]")
    assert line_text(L_TEMPLATE).startswith("template =")
    assert line_text(L_ADAPTER).startswith("[finetune.adapter]")
    assert line_text(L_COMPRESS_0).startswith("[[compress]]")
    assert line_text(L_COMPRESS_1).startswith("[[compress]]")
    assert line_text(L_BITS_1).startswith("bits")


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (["title"], L_TITLE),
        (["model"], L_MODEL),
        (["model", "context_length"], L_CONTEXT),
        (["model", "d_model"], L_D_MODEL),  # quoted key
        (["model", "attention"], L_ATTENTION),
        (["model", "attention", "n_heads"], L_N_HEADS),
        (["model", "attention", "name"], L_ATT_NAME),
        (["finetune"], L_FINETUNE),
        (["finetune", "task"], L_TASK),
        (["finetune", "adapter"], L_ADAPTER),
        (["finetune", "adapter", "name"], L_ADAPTER_NAME),
        (["finetune", "adapter", "rank"], L_RANK),
        (["finetune", "literal key"], L_LITERAL),
    ],
)
def test_tables_and_keys(path, line):
    assert key_line(SPEC, path) == line


def test_dotted_keys():
    assert key_line(SPEC, ["model", "mlp"]) == L_HIDDEN  # the first dotted key that makes the table
    assert key_line(SPEC, ["model", "mlp", "hidden_dim"]) == L_HIDDEN
    assert key_line(SPEC, ["model", "mlp", "activation"]) == L_ACTIVATION
    assert key_line(SPEC, ["model", "mlp", "activation", "approximate"]) == L_ACTIVATION


def test_inline_tables():
    assert key_line(SPEC, ["finetune", "template"]) == L_TEMPLATE
    assert key_line(SPEC, ["finetune", "template", "name"]) == L_TEMPLATE
    assert key_line(SPEC, ["finetune", "template", "system"]) == L_TEMPLATE
    assert key_line(SPEC, ["compress", 0, "options", "sparsity"]) == L_OPTIONS_0


def test_array_of_tables_picks_the_nth_element():
    assert key_line(SPEC, ["compress"]) == L_COMPRESS_0
    assert key_line(SPEC, ["compress", 0]) == L_COMPRESS_0
    assert key_line(SPEC, ["compress", 1]) == L_COMPRESS_1
    assert key_line(SPEC, ["compress", -1]) == L_COMPRESS_1
    assert key_line(SPEC, ["compress", 0, "method"]) == L_METHOD_0
    assert key_line(SPEC, ["compress", 1, "method"]) == L_METHOD_1
    assert key_line(SPEC, ["compress", 1, "bits"]) == L_BITS_1
    # [compress.schedule] belongs to the [[compress]] element before it
    assert key_line(SPEC, ["compress", 0, "schedule"]) == L_SCHEDULE_0
    assert key_line(SPEC, ["compress", 0, "schedule", "steps"]) == L_STEPS_0
    assert key_line(SPEC, ["compress", 1, "schedule"]) == L_COMPRESS_1  # falls back to the element


def test_multiline_arrays_and_strings_do_not_open_tables():
    assert key_line(SPEC, ["finetune", "stop_words"]) == L_STOP_WORDS
    assert key_line(SPEC, ["finetune", "stop_words", 1]) == L_STOP_WORDS + 2  # '[ "nested", ... ]'
    assert key_line(SPEC, ["finetune", "stop_words", 2]) == L_STOP_WORDS + 4  # the multi-line string
    assert key_line(SPEC, ["finetune", "notes"]) == L_NOTES
    # keys after the array and the strings still land in [finetune]
    assert key_line(SPEC, ["finetune", "literal key"]) == L_LITERAL
    # the "[...]" lines inside them are not tables
    assert key_line(SPEC, ["finetune", "fake"]) == L_FINETUNE
    assert key_line(SPEC, ["finetune", "inside_string"]) == L_FINETUNE
    assert key_line(SPEC, ["not"]) is None
    assert key_line(SPEC, ["name"]) is None
    # only two [[compress]] headers are counted (the one in the string is text)
    assert key_line(SPEC, ["compress", 2]) == L_COMPRESS_0
    assert key_line(SPEC, ["compress", 1, "name"]) == L_COMPRESS_1


def test_missing_keys_fall_back_to_the_longest_prefix():
    assert key_line(SPEC, ["finetune", "nope"]) == L_FINETUNE
    assert key_line(SPEC, ["finetune", "adapter", "alpha"]) == L_ADAPTER
    assert key_line(SPEC, ["finetune", "template", "missing"]) == L_TEMPLATE
    assert key_line(SPEC, ["finetune", "adapter", "targets", 5]) == L_TARGETS
    assert key_line(SPEC, ["data"]) is None
    assert key_line(SPEC, []) is None
    assert key_line("", ["model"]) is None


def test_implied_tables_and_crlf():
    text = "[a.b]\r\nx = 1\r\n\r\n[a]\r\ny = 2\r\n"
    assert tomllib.loads(text) == {"a": {"b": {"x": 1}, "y": 2}}
    assert key_line(text, ["a", "b", "x"]) == 2
    assert key_line(text, ["a"]) == 4  # its own header wins over the implying [a.b]
    assert key_line(text, ["a", "y"]) == 5
    assert key_line("[a.b]\nx = 1\n", ["a", "z"]) == 1  # only implied: the first header making it


def test_quoted_header_keys_and_escapes():
    text = '[ "my.table" . \'sub\' ]\n"k\\"ey" = 1\n"\\u00e9" = 2\n'
    assert tomllib.loads(text) == {"my.table": {"sub": {'k"ey': 1, "\u00e9": 2}}}
    assert key_line(text, ["my.table", "sub"]) == 1
    assert key_line(text, ["my.table", "sub", 'k"ey']) == 2
    assert key_line(text, ["my.table", "sub", "\u00e9"]) == 3
    assert key_line(text, ["my"]) is None


def test_nested_arrays_of_tables():
    text = "[[a]]\n[[a.b]]\nx = 1\n[[a.b]]\nx = 2\n[[a]]\n[[a.b]]\nx = 3\n"
    data = tomllib.loads(text)
    assert data["a"][1]["b"][0]["x"] == 3
    assert key_line(text, ["a", 0, "b", 1, "x"]) == 5
    assert key_line(text, ["a", 1, "b", 0, "x"]) == 8
    assert key_line(text, ["a", 1]) == 6


def test_multiline_array_of_inline_tables():
    text = 'layers = [\n  { kind = "attn" },\n  # comment\n  { kind = "mlp", width = 4 },\n]\nafter = 1\n'
    assert tomllib.loads(text)["layers"][1]["width"] == 4
    assert key_line(text, ["layers", 1, "width"]) == 4
    assert key_line(text, ["layers", 0]) == 2
    assert key_line(text, ["after"]) == 6


def test_multiline_string_with_escaped_and_extra_quotes():
    text = 'a = """x\\"""\n[t]\n"""\nb = """q""""\n[real]\nc = 1\n'
    data = tomllib.loads(text)
    assert data["a"] == 'x"""\n[t]\n' and data["b"] == 'q"' and data["real"] == {"c": 1}
    assert key_line(text, ["t"]) is None
    assert key_line(text, ["b"]) == 4
    assert key_line(text, ["real", "c"]) == 6


def test_goes_on_after_text_it_cannot_follow():
    text = "[a]\nthis is not toml\nx = 1\n[b]\ny = \n"
    assert key_line(text, ["a", "x"]) == 3
    assert key_line(text, ["b", "y"]) == 5
