"""``corekit spec validate | show | schema`` through the CLI.

Success cases run through ``typer.testing.CliRunner`` against ``app``. Errors are turned
into exit code 2 by :func:`corekit.cli.main.main` (not by ``app``), so error cases call
``main([...])`` and read stderr with ``capsys``; one case also runs the installed
``corekit`` console script in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corekit.cli.main import app, main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_NAMES = ["tiny", "llama-style", "gpt2-small"]
WIDE = {"COLUMNS": "200"}  # rich tables must not fold numbers

runner = CliRunner()


def run_main(argv: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """Run ``corekit ARGV`` in-process the way the console script does."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else code), captured.out, captured.err


# --------------------------------------------------------------------------- malformed specs
GOOD_ATTENTION = '[model.attention]\nname = "mha"\nn_heads = 4\n'


def model(body: str = "", attention: str = GOOD_ATTENTION, tail: str = "") -> str:
    """A TOML spec with a small [model] (``body`` added to it), its attention and ``tail``."""
    return f"[model]\nd_model = 128\nn_layers = 2\n{body}\n{attention}\n{tail}"


# (id, file suffix, file text or None for a missing file, strings the output must contain)
MALFORMED = [
    ("str-for-int", ".toml", model('context_length = "long"'), ["model.context_length", "'long'", "integer"]),
    ("str-for-bool", ".toml", model('tie_embeddings = "maybe"'), ["model.tie_embeddings", "'maybe'"]),
    ("float-for-int", ".toml", model("context_length = 2.5"), ["model.context_length", "2.5"]),
    ("table-for-int", ".toml", model("[model.vocab_size]\nx = 1\n"), ["model.vocab_size", "integer"]),
    ("date-for-float", ".toml", model("init_std = 2024-01-01"), ["model.init_std"]),
    ("unknown-section", ".toml", model(tail="[optimiser]\nlr = 0.1\n"), ["optimiser", "unknown section", "train"]),
    ("unknown-field", ".toml", model("depth = 3"), ["model.depth", "unknown field 'depth'", "n_layers"]),
    (
        "unknown-component-field",
        ".toml",
        model(attention='[model.attention]\nname = "mha"\nn_heads = 4\nheads = 4\n'),
        ["model.attention.heads", "unknown field", "n_heads"],
    ),
    (
        "unknown-attention",
        ".toml",
        model(attention='[model.attention]\nname = "gqaa"\nn_heads = 4\n'),
        ["model.attention.name", "'gqaa'", "mha, gqa, mqa", "did you mean 'gqa'"],
    ),
    (
        "unknown-activation",
        ".toml",
        model(tail='[model.mlp]\nactivation = "swish"\n'),
        ["model.mlp.activation.name", "gelu", "did you mean 'swiglu'"],
    ),
    (
        "unknown-kernel",
        ".toml",
        model(attention='[model.attention]\nn_heads = 4\nkernel = "flsh"\n'),
        ["model.attention.kernel.name", "math, flash", "did you mean 'flash'"],
    ),
    ("missing-model", ".toml", '[tokenizer]\nname = "bytes"\n', ["model", "required field is missing"]),
    ("missing-attention", ".toml", "[model]\nd_model = 128\n", ["model.attention", "required field is missing"]),
    (
        "missing-n-heads",
        ".toml",
        model(attention='[model.attention]\nname = "mha"\n'),
        ["model.attention.n_heads", "required field is missing"],
    ),
    (
        "gqa-missing-n-kv-heads",
        ".toml",
        model(attention='[model.attention]\nname = "gqa"\nn_heads = 4\n'),
        ["model.attention.n_kv_heads", "required field is missing"],
    ),
    (
        "d-model-not-divisible",
        ".toml",
        model(attention='[model.attention]\nn_heads = 6\n'),
        ["model.attention.n_heads", "n_heads=6", "d_model=128"],
    ),
    (
        "n-heads-not-divisible",
        ".toml",
        model(attention='[model.attention]\nname = "gqa"\nn_heads = 8\nn_kv_heads = 3\n'),
        ["model.attention.n_kv_heads", "n_kv_heads=3", "n_heads=8"],
    ),
    (
        "rope-odd-head-dim",
        ".toml",
        "[model]\nd_model = 120\nposition = \"rope\"\n[model.attention]\nn_heads = 8\n",
        ["model.position.name", "head_dim=15", "d_model=120"],
    ),
    (
        "sinusoidal-odd-d-model",
        ".toml",
        "[model]\nd_model = 9\nposition = \"sinusoidal\"\n[model.attention]\nn_heads = 3\n",
        ["model.position.name", "d_model=9"],
    ),
    ("vocab-too-small", ".toml", model("vocab_size = 200"), ["model.vocab_size", "vocab_size=200", "257"]),
    ("invalid-toml", ".toml", "[model]\nd_model = 128\nn_layers 4\n", ["invalid TOML", "line 3"]),
    ("invalid-json", ".json", '{"model": {"d_model": 128,}}', ["invalid JSON", "line 1"]),
    ("missing-file", ".toml", None, ["does not exist"]),
    ("negative-dropout", ".toml", model("dropout = -0.1"), ["model.dropout", "-0.1", "greater than or equal to 0"]),
    ("dropout-one", ".toml", model("dropout = 1.0"), ["model.dropout", "1.0", "less than 1"]),
    ("bad-layout", ".toml", model('layout = "sideways"'), ["model.layout", "'sideways'", "'pre'", "'parallel'"]),
    ("empty-file", ".toml", "", ["model", "required field is missing"]),
    ("empty-json", ".json", "", ["invalid JSON"]),
    ("norm-of-wrong-kind", ".toml", model('norm = "rope"'), ["model.norm.name", "unknown norm 'rope'", "rmsnorm"]),
    ("rope-theta-zero", ".toml", model(tail='[model.position]\nname = "rope"\ntheta = 0\n'), ["model.position.theta"]),
    ("array-of-tables", ".toml", "[[model]]\nd_model = 128\n", ["model", "expected a table"]),
    ("json-top-level-array", ".json", '[{"model": {}}]', ["table/object"]),
    ("model-not-a-table", ".toml", "model = 5\n", ["model", "expected a table, got int 5"]),
    (
        "three-problems",
        ".toml",
        model('dropout = 2.0\nlayout = "side"', tail="[train]\nmax_steps = 0\n"),
        ["3 errors", "model.dropout", "model.layout", "train.max_steps"],
    ),
]


@pytest.mark.parametrize(("suffix", "text", "expected"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_validate_malformed(tmp_path, capsys, monkeypatch, suffix, text, expected):
    path = tmp_path / f"spec{suffix}"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    code, out, err = run_main(["spec", "validate", str(path)], capsys, monkeypatch)
    output = out + err
    assert "Traceback" not in output
    assert code == 2, output
    assert err.startswith("error: invalid spec"), err
    assert str(path) in err
    for fragment in expected:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    assert "valid (" not in out


def test_validate_malformed_console_script(tmp_path):
    """The installed ``corekit`` script: exit 2, the message on stderr, no traceback."""
    exe = shutil.which("corekit")
    cmd = [exe] if exe else [sys.executable, "-c", "from corekit.cli.main import main; main()"]
    path = tmp_path / "bad.toml"
    path.write_text(model(attention='[model.attention]\nname = "gqaa"\nn_heads = 4\n'), encoding="utf-8")
    env = {**os.environ, "COREKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("COREKIT_REGISTRY", None)
    proc = subprocess.run(
        [*cmd, "spec", "validate", str(path)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert "model.attention.name" in proc.stderr
    assert "did you mean 'gqa'" in proc.stderr


def test_validate_bad_set(capsys, monkeypatch):
    code, out, err = run_main(
        ["spec", "validate", str(EXAMPLES / "tiny.toml"), "--set", "model.d_model"], capsys, monkeypatch
    )
    assert code == 2
    assert "Traceback" not in out + err
    assert "--set" in err and "'model.d_model'" in err


def test_validate_set_breaks_rule(capsys, monkeypatch):
    code, _, err = run_main(
        ["spec", "validate", str(EXAMPLES / "tiny.toml"), "--set", "model.attention.n_kv_heads=3"], capsys, monkeypatch
    )
    assert code == 2
    assert "model.attention.n_kv_heads" in err and "n_kv_heads=3" in err


# --------------------------------------------------------------------------- valid specs
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_validate_examples(name):
    path = EXAMPLES / f"{name}.toml"
    result = runner.invoke(app, ["spec", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}: valid (" in result.output


def test_validate_examples_through_main(capsys, monkeypatch):
    code, out, err = run_main(["spec", "validate", str(EXAMPLES / "tiny.toml")], capsys, monkeypatch)
    assert code == 0, err
    assert "valid (4 layers, d_model 128, gqa attention, rmsnorm, swiglu, rope positions)" in out


def test_validate_json(tmp_path):
    import tomllib

    data = tomllib.loads((EXAMPLES / "llama-style.toml").read_text(encoding="utf-8"))
    path = tmp_path / "llama.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    result = runner.invoke(app, ["spec", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "8 layers, d_model 512, gqa attention, rmsnorm, swiglu, rope positions" in result.output


def test_validate_set():
    result = runner.invoke(
        app,
        [
            "spec", "validate", str(EXAMPLES / "tiny.toml"),
            "--set", "model.n_layers=2", "--set", "model.position=alibi", "--set", "model.norm=layernorm",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "(2 layers, d_model 128, gqa attention, layernorm, swiglu, alibi positions)" in result.output


# --------------------------------------------------------------------------- show
def _gpt2_flops() -> int:
    d, layers, ctx, vocab, hidden = 768, 12, 1024, 50257, 3072
    per_layer = d * 3 * d + d * d + d * hidden + hidden * d  # qkv, out, up, down
    n_matmul = layers * per_layer + d * vocab  # + lm_head
    assert per_layer == 768 * 2304 + 768 * 768 + 768 * 3072 + 3072 * 768
    return 2 * n_matmul + 4 * layers * ctx * d


def _row(output: str, label: str) -> str:
    lines = [line for line in output.splitlines() if label in line]
    assert len(lines) == 1, f"{label!r} in:\n{output}"
    return lines[0]


def _last_number(line: str) -> int:
    return int(re.findall(r"\d[\d,]*", line)[-1].replace(",", ""))


def test_show_gpt2():
    result = runner.invoke(app, ["spec", "show", str(EXAMPLES / "gpt2-small.toml")], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "124,439,808" in _row(out, "parameters  ")
    flops_line = _row(out, "FLOPs")
    assert "T=1024" in flops_line
    assert _last_number(flops_line) == _gpt2_flops() == 284_812_800
    assert re.search(r"model\.mlp\.hidden_dim\s*│\s*3072\s", out)
    assert re.search(r"model\.vocab_size\s*│\s*50257\s", out)


def test_show_set():
    path = str(EXAMPLES / "gpt2-small.toml")
    result = runner.invoke(app, ["spec", "show", path, "--set", "model.n_layers=2"], env=WIDE)
    assert result.exit_code == 0, result.output
    out = result.output
    assert re.search(r"model\.n_layers\s*│\s*2\s", out)
    per_layer = 768 * 2304 + 768 * 768 + 768 * 3072 + 3072 * 768
    assert _last_number(_row(out, "FLOPs")) == 2 * (2 * per_layer + 768 * 50257) + 4 * 2 * 1024 * 768
    assert "124,439,808" not in out


# --------------------------------------------------------------------------- schema
def test_schema_stdout():
    result = runner.invoke(app, ["spec", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert "model" in schema["properties"]
    assert schema["properties"]["model"]
    text = json.dumps(schema)
    for name in ("gqa", "rmsnorm", "swiglu", "rope", "n_kv_heads", "theta"):
        assert name in text


def test_schema_out_file(tmp_path):
    out = tmp_path / "sub" / "spec.schema.json"
    out.parent.mkdir()
    result = runner.invoke(app, ["spec", "schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    written = json.loads(out.read_text(encoding="utf-8"))
    assert "model" in written["properties"]
    assert written == json.loads(runner.invoke(app, ["spec", "schema"]).stdout)
