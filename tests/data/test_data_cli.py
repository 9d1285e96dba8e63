"""``corekit tokenizer train`` and ``corekit data prepare`` through the command line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import tomllib

from helpers import run_cli as run

WORDS = "the of and to in is was for on that with as by at from alpha beta gamma delta".split()


def write_corpus(root: Path, n: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{i:03d}.txt").write_text(
            f"{i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 40))) + "\n", encoding="utf-8")
    return root


SPEC = """\
[model]
context_length = 32
d_model = 32
n_layers = 2
attention = {{ name = "mha", n_heads = 4 }}
pad_vocab_multiple = 64

[tokenizer]
{tokenizer}

[data]
paths = {paths}
min_chars = 8
val_fraction = 0.2
"""


def write_spec(path: Path, paths: list[str], tokenizer: str = 'name = "bpe"\nvocab_size = 300') -> Path:
    path.write_text(SPEC.format(tokenizer=tokenizer, paths=json.dumps(paths)), encoding="utf-8")
    return path


@pytest.fixture
def spec_file() -> Path:
    """A bpe spec over a corpus in the working directory (relative paths)."""
    write_corpus(Path("corpus"))
    return write_spec(Path("spec.toml"), ["corpus/*.txt"])


def test_tokenizer_train_then_data_prepare(capsys, spec_file, tmp_path):
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "tokenizer", "train", str(spec_file), "--run-dir", str(run_dir))
    assert code == 0, err
    assert "trained bpe tokenizer: 300 ids" in out and str(run_dir / "tokenizer.json") in out
    assert "training bpe tokenizer" in err  # the progress line, on stderr
    assert (run_dir / "tokenizer.json").is_file()
    stored = tomllib.loads((run_dir / "spec.toml").read_text())
    assert stored["model"]["vocab_size"] == 320 and stored["tokenizer"]["vocab_size"] == 300
    tokenizer_bytes = (run_dir / "tokenizer.json").read_bytes()

    code, out, err = run(capsys, "data", "prepare", str(spec_file), "--run-dir", str(run_dir), "-j", "1")
    assert code == 0, err
    manifest = json.loads((run_dir / "data" / "manifest.json").read_text())
    stats = manifest["stats"]
    assert manifest["complete"] and stats["documents_out"] == 60
    assert "tokenizing" in err and "60 documents" in err  # progress, on stderr
    assert "documents kept" in out and "documents read" in out
    for split in ("train", "val"):
        s = stats[split]
        assert f"{s['documents']:,} documents, {s['tokens']:,} tokens, {s['shards']} shard(s)" in out
    assert "uint16" in out and "nothing to do" not in out
    assert (run_dir / "tokenizer.json").read_bytes() == tokenizer_bytes  # kept, not retrained

    code, out, err = run(capsys, "data", "prepare", str(spec_file), "--run-dir", str(run_dir), "-j", "1")
    assert code == 0, err
    assert "nothing to do" in out and "documents kept" in out

    code, out, err = run(capsys, "tokenizer", "train", str(spec_file), "--run-dir", str(run_dir))
    assert code == 0 and "kept the existing bpe tokenizer" in out


def test_data_prepare_trains_the_tokenizer_into_the_default_run_dir(capsys, spec_file):
    code, out, err = run(capsys, "data", "prepare", str(spec_file), "-j", "1")
    assert code == 0, err
    run_dir = Path("runs") / "spec"
    assert (run_dir / "tokenizer.json").is_file() and (run_dir / "spec.toml").is_file()
    assert json.loads((run_dir / "data" / "manifest.json").read_text())["complete"]
    assert "training bpe tokenizer" in err and "documents kept" in out


def test_set_overrides_reach_the_data_stage(capsys, spec_file, tmp_path):
    code, _, err = run(capsys, "data", "prepare", str(spec_file), "--run-dir", str(tmp_path / "r"), "-j", "1",
                       "--set", "tokenizer=\"bytes\"", "--set", "data.shard_tokens=300")
    assert code == 0, err
    manifest = json.loads((tmp_path / "r" / "data" / "manifest.json").read_text())
    assert manifest["config"]["data"]["shard_tokens"] == 300 and manifest["config"]["vocab_size"] == 257
    assert manifest["config"]["dtype"] == "uint16" and manifest["complete"]


def test_a_glob_matching_nothing_exits_2_naming_the_pattern(capsys, tmp_path):
    spec = write_spec(Path("spec.toml"), ["corpus/*.txt", "nowhere/**/*.md"])
    write_corpus(Path("corpus"), 5)
    for command in (["data", "prepare"], ["tokenizer", "train"]):
        code, out, err = run(capsys, *command, str(spec), "--run-dir", str(tmp_path / "r"))
        assert code == 2, (command, out, err)
        assert "data.paths[1]" in err and "nowhere/**/*.md" in err
        assert "Traceback" not in err + out


def test_a_jsonl_line_without_the_field_exits_2_naming_file_and_line(capsys, tmp_path):
    data = Path("data.jsonl")
    data.write_text('{"text": "a fine first document here"}\n{"content": "the wrong field"}\n', encoding="utf-8")
    spec = write_spec(Path("spec.toml"), [str(data)], tokenizer='name = "bytes"')
    code, out, err = run(capsys, "data", "prepare", str(spec), "--run-dir", str(tmp_path / "r"), "-j", "1")
    assert code == 2 and "data.jsonl:2" in err and "'text'" in err and "Traceback" not in err + out


def test_an_empty_corpus_exits_2_naming_min_chars(capsys, spec_file, tmp_path):
    code, out, err = run(capsys, "data", "prepare", str(spec_file), "--run-dir", str(tmp_path / "r"), "-j", "1",
                         "--set", "data.min_chars=100000")
    assert code == 2 and "min_chars" in err and "Traceback" not in err + out


def test_a_bpe_vocabulary_too_small_exits_2_naming_the_field(capsys, tmp_path):
    write_corpus(Path("corpus"), 5)
    spec = write_spec(Path("spec.toml"), ["corpus"], tokenizer='name = "bpe"\nvocab_size = 100')
    code, out, err = run(capsys, "tokenizer", "train", str(spec), "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "tokenizer.vocab_size" in err and "Traceback" not in err + out
    assert not (tmp_path / "r").exists()


def test_changing_the_tokenizer_of_a_run_exits_2(capsys, spec_file, tmp_path):
    run_dir = tmp_path / "r"
    assert run(capsys, "tokenizer", "train", str(spec_file), "--run-dir", str(run_dir))[0] == 0
    saved = (run_dir / "tokenizer.json").read_bytes()
    code, out, err = run(capsys, "data", "prepare", str(spec_file), "--run-dir", str(run_dir),
                         "--set", "tokenizer.vocab_size=384")
    assert code == 2 and "--run-dir" in err and "Traceback" not in err + out
    assert (run_dir / "tokenizer.json").read_bytes() == saved


def test_a_missing_spec_file_exits_2(capsys):
    code, out, err = run(capsys, "data", "prepare", "nope.toml")
    assert code == 2 and "nope.toml" in err and "Traceback" not in err + out


def test_help_lists_the_commands(capsys):
    code, out, _ = run(capsys, "data", "--help")
    assert code == 0 and "prepare" in out
    code, out, _ = run(capsys, "tokenizer", "--help")
    assert code == 0 and "train" in out
