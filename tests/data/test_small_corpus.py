"""A small corpus still trains: when the document hashes put every document in one split,
one document moves to the other split (with a note), and a single document is a clear error."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from helpers import run_cli as run

WORDS = "the of and to in is was for on that with as by at from alpha beta gamma delta".split()

SPEC = """\
[model]
context_length = 32
d_model = 32
n_layers = 2
attention = {{ name = "mha", n_heads = 4 }}

[tokenizer]
{tokenizer}

[data]
paths = {paths}
min_chars = 8
{extra}

[train]
max_steps = 2
batch_size = 2
eval_every = 2
checkpoint_every = 2
log_every = 1
"""


def write_corpus(root: Path, n: int, val_fraction: float, split: str, seed: int = 0) -> list[str]:
    """``n`` documents (one file each) that all hash to ``split`` at ``val_fraction``; their texts."""
    from corekit.data.sources import split_of

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    texts: list[str] = []
    while len(texts) < n:
        text = f"{len(texts)}: " + " ".join(rng.choice(WORDS) for _ in range(60)) + "\n"
        if split_of(text, val_fraction) == split:
            (root / f"{len(texts):03d}.txt").write_text(text, encoding="utf-8")
            texts.append(text)
    return texts


def write_spec(path: Path, corpus: Path, val_fraction: float | None = None, tokenizer: str = 'name = "bytes"') -> Path:
    extra = "" if val_fraction is None else f"val_fraction = {val_fraction}"
    path.write_text(SPEC.format(tokenizer=tokenizer, paths=json.dumps([str(corpus)]), extra=extra), encoding="utf-8")
    return path


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "data" / "manifest.json").read_text(encoding="utf-8"))


def test_twenty_documents_that_all_hash_to_train_give_a_val_split(tmp_path, capsys):
    """At the default val_fraction (0.05) no document of this corpus hashes to val."""
    write_corpus(tmp_path / "corpus", 20, 0.05, "train")
    spec, run_dir = write_spec(tmp_path / "spec.toml", tmp_path / "corpus"), tmp_path / "run"
    code, out, err = run(capsys, "data", "prepare", str(spec), "--run-dir", str(run_dir), "-j", "1")
    assert code == 0, err
    stats = manifest(run_dir)["stats"]
    assert (stats["train"]["documents"], stats["val"]["documents"]) == (19, 1)
    assert stats["train"]["tokens"] > 0 and stats["val"]["tokens"] > 0
    notes = manifest(run_dir)["notes"]
    assert len(notes) == 1 and "val split would be empty" in notes[0] and "moved to val" in notes[0]
    assert "warning: data: the val split would be empty" in err


def test_twenty_documents_that_all_hash_to_val_give_a_train_split(tmp_path, capsys):
    write_corpus(tmp_path / "corpus", 20, 0.95, "val")
    spec, run_dir = write_spec(tmp_path / "spec.toml", tmp_path / "corpus", 0.95), tmp_path / "run"
    code, out, err = run(capsys, "data", "prepare", str(spec), "--run-dir", str(run_dir), "-j", "1")
    assert code == 0, err
    stats = manifest(run_dir)["stats"]
    assert (stats["train"]["documents"], stats["val"]["documents"]) == (1, 19)
    assert "moved to train" in manifest(run_dir)["notes"][0]


def test_the_tokenizer_and_the_shards_see_the_same_split(registry, tmp_path):
    """The moved document is held out of tokenizer training too, and is the one val document."""
    from corekit.data.sources import plan_split, split_documents
    from corekit.spec import load_spec

    texts = write_corpus(tmp_path / "corpus", 20, 0.05, "train")
    spec = load_spec(write_spec(tmp_path / "spec.toml", tmp_path / "corpus"), registry=registry)
    plan = plan_split(spec.data)
    assert plan.moved is not None and plan.note
    train, val = list(split_documents(spec.data, "train")), list(split_documents(spec.data, "val"))
    assert val == [texts[plan.moved]]
    assert train == [t for i, t in enumerate(texts) if i != plan.moved]


def test_a_corpus_split_by_its_hashes_is_left_alone(registry, tmp_path, monkeypatch):
    """A normal corpus: no document moves, and planning reads only until both splits have one."""
    import corekit.data.sources as sources
    from corekit.spec import load_spec

    rng = random.Random(1)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"{i}: " + " ".join(rng.choice(WORDS) for _ in range(20))}) + "\n"
                              for i in range(2000)), encoding="utf-8")
    spec = load_spec(write_spec(tmp_path / "spec.toml", corpus, 0.2), registry=registry)
    read = []
    real = sources.raw_documents
    monkeypatch.setattr(sources, "raw_documents", lambda data: (read.append(1) or doc for doc in real(data)))
    plan = sources.plan_split(spec.data)
    assert plan.moved is None and plan.note is None
    assert len(read) < 100


def test_a_single_document_is_a_clear_error(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "only.txt").write_text("one document, long enough to pass min_chars\n", encoding="utf-8")
    spec = write_spec(tmp_path / "spec.toml", corpus, tokenizer='name = "bpe"\nvocab_size = 300')
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "data", "prepare", str(spec), "--run-dir", str(run_dir), "-j", "1")
    assert code == 2, out + err
    assert "Traceback" not in out + err
    assert "1 document" in err and "data.val_fraction" in err and "at least 2" in err
    assert not (run_dir / "tokenizer.json").exists() and not (run_dir / "data").exists()


@pytest.mark.slow
def test_a_small_corpus_trains(tmp_path, capsys):
    write_corpus(tmp_path / "corpus", 20, 0.05, "train")
    spec, run_dir = write_spec(tmp_path / "spec.toml", tmp_path / "corpus"), tmp_path / "run"
    code, out, err = run(capsys, "train", str(spec), "--run-dir", str(run_dir), "-j", "1")
    assert code == 0, err
    assert "trained 2 steps" in out and "val loss" in out
