"""``corekit plugins`` and ``corekit generate`` through the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import run_cli as run

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_plugins_json_lists_every_builtin(capsys):
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == 0
    rows = json.loads(out)
    names = {(r["kind"], r["name"]) for r in rows}
    for expected in [("attention", "gqa"), ("attention_kernel", "flash"), ("norm", "rmsnorm"),
                     ("activation", "swiglu"), ("positional", "alibi"), ("tokenizer", "bytes")]:
        assert expected in names
    assert all(r["package"] == "corekit" and r["version"] and r["description"] for r in rows)


def test_plugins_kind_filter_and_table(capsys):
    code, out, _ = run(capsys, "plugins", "--kind", "norm")
    assert code == 0
    assert "layernorm" in out and "rmsnorm" in out and "gqa" not in out


def test_plugins_unknown_kind(capsys):
    code, _, err = run(capsys, "plugins", "--kind", "norms")
    assert code == 2
    assert "did you mean 'norm'" in err and "Traceback" not in err


def test_generate_greedy_is_reproducible(capsys):
    args = ("generate", str(EXAMPLES / "tiny.toml"), "-p", "def f(x):", "-n", "12", "--temperature", "0", "--seed", "3")
    code, first, _ = run(capsys, *args)
    assert code == 0 and first.startswith("def f(x):")
    code, second, _ = run(capsys, *args)
    assert first == second


def test_generate_batch_prints_each_prompt(capsys):
    code, out, _ = run(capsys, "generate", str(EXAMPLES / "tiny.toml"), "-p", "a", "-p", "bcd", "-n", "4",
                       "--seed", "1", "--top-k", "20", "--top-p", "0.9")
    assert code == 0
    assert "--- 'a'" in out and "--- 'bcd'" in out


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--top-p", "1.5"], "top_p"),
        (["--stop", "two tokens"], "--stop"),
        (["--set", "model.d_model=130"], "model.attention.n_heads"),
    ],
)
def test_generate_bad_input_exits_2(capsys, extra, needle):
    code, _, err = run(capsys, "generate", str(EXAMPLES / "tiny.toml"), "-p", "x", *extra)
    assert code == 2
    assert needle in err and "Traceback" not in err


def test_console_script_exit_code():
    exe = shutil.which("corekit")
    assert exe, "the corekit console script is installed by pip install -e ."
    proc = subprocess.run([exe, "spec", "validate", "missing.toml"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "missing.toml" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["tiny.toml", "llama-style.toml", "gpt2-small.toml"])
def test_generate_from_every_example(capsys, spec):
    """gpt2-small's vocab (50257) is larger than the bytes tokenizer's: output must still decode."""
    code, out, err = run(capsys, "generate", str(EXAMPLES / spec), "-p", "hi", "-n", "3", "--seed", "0")
    assert code == 0, err
    assert out.startswith("hi")


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--temperature", "nan"], "temperature"),
        (["--stop-id", "99999"], "--stop-id 99999"),
    ],
)
def test_generate_more_bad_input(capsys, extra, needle):
    code, out, err = run(capsys, "generate", str(EXAMPLES / "tiny.toml"), "-p", "x", *extra)
    assert code == 2 and needle in err and "Traceback" not in err
    assert out == ""  # checked before anything is printed


def test_schema_out_to_a_directory_is_a_clear_error(capsys, tmp_path):
    code, _, err = run(capsys, "spec", "schema", "--out", str(tmp_path))
    assert code == 2 and str(tmp_path) in err and "Traceback" not in err


@pytest.mark.parametrize("args", [["plugins"], ["spec", "validate", str(EXAMPLES / "tiny.toml")], ["spec", "schema"]])
def test_commands_that_need_no_model_do_not_import_torch(args):
    """Listing plugins and checking specs stay cheap: no torch import."""
    import sys

    code = (
        "import sys\nfrom corekit.cli.main import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "False"
