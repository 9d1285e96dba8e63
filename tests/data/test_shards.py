"""Token shards and the tokenizer stage of a run directory.

Shards must hold exactly the tokens of the cleaned documents, each followed by the
end-of-text id; re-running does no work; damaged shards are detected and rebuilt alone;
interrupted runs resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import tomllib
from helpers import model_section

from corekit.data import shards as shards_mod
from corekit.data.shards import SPLITS, dtype_for, prepare_shards, read_manifest
from corekit.data.sources import split_documents
from corekit.errors import CorekitError, SpecError
from corekit.rundir import RunDir, ensure_tokenizer, file_sha256
from corekit.spec import load_spec, padded_vocab

WORDS = ("the of and to in is was for on that with as by at from his an were are which this be "
         "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu").split()
OLD_NS = 1_000_000_000 * 10**9  # an mtime in 2001: a file that keeps it was not rewritten

BPE = {"name": "bpe", "vocab_size": 320}
CHAR = {"name": "char"}


# --------------------------------------------------------------------------- helpers
def write_corpus(root: Path, n: int, seed: int = 0, lo: int = 8, hi: int = 60) -> Path:
    """``n`` distinct text files of random words (digits in every one, so ``char`` sees them)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))
        (root / f"doc{i:04d}.txt").write_text(f"{words}. ({i:04d})\n", encoding="utf-8")
    return root


def make_spec(registry, corpus: Path | list[str], tokenizer="bytes", model=None, **data):
    paths = [str(corpus)] if isinstance(corpus, Path) else corpus
    data = {"paths": paths, "min_chars": 1, "val_fraction": 0.2, **data}
    return load_spec({"model": model or model_section(), "tokenizer": tokenizer, "data": data}, registry=registry)


def stage(spec, run_path: Path, registry, workers: int = 1, **kwargs):
    """The tokenizer stage then the shard stage: ``(tokenizer, PrepareResult, RunDir)``."""
    run = RunDir(run_path)
    tokenizer, _ = ensure_tokenizer(spec, run, registry)
    result = prepare_shards(run.data, spec.data, tokenizer, file_sha256(run.tokenizer), workers=workers, **kwargs)
    return tokenizer, result, run


def shard_files(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.glob("*.bin"))}


def mtimes(data_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(data_dir.glob("*.bin"))}


def age(data_dir: Path) -> None:
    """Give every shard an old mtime, so that rewrites show however coarse the clock."""
    for p in data_dir.glob("*.bin"):
        os.utime(p, ns=(OLD_NS, OLD_NS))


def no_temp_files(data_dir: Path) -> bool:
    return not [name for name in os.listdir(data_dir) if name.endswith(".tmp")]


def check_shards(data_dir: Path, data, tokenizer) -> dict:
    """Assert the shards hold exactly the cleaned documents, each followed by the eot id."""
    manifest = read_manifest(data_dir)
    assert manifest is not None and manifest["complete"] is True
    dtype = np.dtype(manifest["config"]["dtype"])
    eot = tokenizer.eot_id
    assert manifest["config"]["eot_id"] == eot and manifest["config"]["vocab_size"] == tokenizer.vocab_size
    for split in SPLITS:
        texts = list(split_documents(data, split))
        entries = manifest["shards"][split]
        assert entries, split
        assert entries[0]["doc_start"] == 0 and entries[-1]["doc_end"] == len(texts)
        for prev, nxt in zip(entries, entries[1:]):
            assert nxt["doc_start"] == prev["doc_end"], (split, prev, nxt)  # contiguous document ranges
        assert manifest["stats"][split] == {
            "documents": len(texts), "tokens": sum(e["tokens"] for e in entries), "shards": len(entries)}
        for entry in entries:
            path = data_dir / entry["file"]
            tokens = np.fromfile(path, dtype=dtype)
            assert len(tokens) == entry["tokens"] and path.stat().st_size == entry["tokens"] * dtype.itemsize
            assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            docs = texts[entry["doc_start"]:entry["doc_end"]]
            expected = [np.asarray(tokenizer.encode(t, allow_special=False) + [eot]) for t in docs]
            np.testing.assert_array_equal(tokens, np.concatenate(expected), err_msg=f"{split} {entry['file']}")
            # decode back, document by document
            assert tokens[-1] == eot  # a shard ends at a document boundary
            cuts = np.flatnonzero(tokens == eot)
            assert len(cuts) == len(docs)
            pieces = np.split(tokens, cuts + 1)[:-1]
            assert [tokenizer.decode(p[:-1].tolist()) for p in pieces] == docs
    return manifest


# --------------------------------------------------------------------------- contents
@pytest.mark.parametrize("tok", ["bytes", BPE, CHAR], ids=["bytes", "bpe", "char"])
def test_shards_hold_exactly_the_cleaned_documents(registry, tmp_path, tok):
    corpus = write_corpus(tmp_path / "corpus", 40)
    (corpus / "dup.txt").write_text((corpus / "doc0003.txt").read_text())  # dropped as a duplicate
    (corpus / "short.txt").write_text("hi")  # dropped: too short
    spec = make_spec(registry, corpus, tok, min_chars=8)
    tokenizer, result, run = stage(spec, tmp_path / "run", registry)
    manifest = check_shards(run.data, spec.data, tokenizer)
    assert manifest["config"]["dtype"] == "uint16"
    stats = manifest["stats"]
    assert (stats["documents_in"], stats["duplicates"], stats["too_short"], stats["documents_out"]) == (42, 1, 1, 40)
    assert stats["train"]["documents"] + stats["val"]["documents"] == 40
    assert result.built == 2 and not result.skipped and no_temp_files(run.data)


def test_whole_split_decodes_to_the_documents_joined_by_eot(registry, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 30)
    spec = make_spec(registry, corpus, "bytes")
    tokenizer, result, run = stage(spec, tmp_path / "run", registry)
    for split in SPLITS:
        entry, = result.manifest["shards"][split]
        tokens = np.fromfile(run.data / entry["file"], dtype=result.manifest["config"]["dtype"])
        texts = list(split_documents(spec.data, split))
        assert tokenizer.decode(tokens) == "".join(t + "<|endoftext|>" for t in texts)


@pytest.mark.parametrize("tok", ["bytes", BPE], ids=["bytes", "bpe"])
def test_many_shards_end_at_document_boundaries(registry, tmp_path, tok):
    """More documents than one encode batch, and shards much smaller than a batch."""
    corpus = write_corpus(tmp_path / "corpus", 300)
    spec = make_spec(registry, corpus, tok, shard_tokens=1500)
    tokenizer, result, run = stage(spec, tmp_path / "run", registry)
    manifest = check_shards(run.data, spec.data, tokenizer)
    for split in SPLITS:
        entries = manifest["shards"][split]
        assert len(entries) >= 3, split
        assert [e["file"] for e in entries] == [f"{split}_{i:06d}.bin" for i in range(len(entries))]
        texts = list(split_documents(spec.data, split))
        for entry in entries[:-1]:  # each ends at the first document boundary past shard_tokens
            last = len(tokenizer.encode(texts[entry["doc_end"] - 1], allow_special=False)) + 1
            assert entry["tokens"] >= 1500 > entry["tokens"] - last
    assert sorted(p.name for p in run.data.glob("*.bin")) == sorted(
        e["file"] for s in SPLITS for e in manifest["shards"][s])
    assert result.built == sum(len(manifest["shards"][s]) for s in SPLITS)


def test_dtype_for():
    assert dtype_for(257) == np.uint16
    assert dtype_for(2**16) == np.uint16  # ids 0..65535 fit
    assert dtype_for(2**16 + 1) == np.uint32
    assert dtype_for(200_000) == np.uint32


def test_a_vocabulary_past_uint16_gives_uint32_shards(registry, tmp_path):
    alphabet = "".join(chr(c) for c in range(0x100, 0x100 + 66_000 + 2048) if not 0xD800 <= c < 0xE000)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(8):  # distinct documents, each holding every character
        (corpus / f"{i}.txt").write_text(alphabet[i:] + alphabet[:i], encoding="utf-8")
    spec = make_spec(registry, corpus, CHAR, normalize=False, val_fraction=0.25)
    tokenizer, result, run = stage(spec, tmp_path / "run", registry)
    assert tokenizer.vocab_size > 2**16
    assert result.manifest["config"]["dtype"] == "uint32"
    check_shards(run.data, spec.data, tokenizer)
    big = max(int(np.fromfile(run.data / e["file"], dtype=np.uint32).max()) for e in result.manifest["shards"]["train"])
    assert big >= 2**16


def test_manifest_records_tokenizer_counts_and_shard_hashes(registry, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 120)
    spec = make_spec(registry, corpus, BPE, shard_tokens=2000)
    tokenizer, result, run = stage(spec, tmp_path / "run", registry)
    manifest = json.loads((run.data / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["format"] == "corekit-shards" and manifest["complete"] is True
    config = manifest["config"]
    assert config["tokenizer_sha256"] == hashlib.sha256(run.tokenizer.read_bytes()).hexdigest()
    assert config["data"]["shard_tokens"] == 2000 and config["data"]["paths"] == [str(corpus)]
    assert config["eot_id"] == tokenizer.eot_id == 0
    for split in SPLITS:
        for entry in manifest["shards"][split]:
            raw = (run.data / entry["file"]).read_bytes()
            assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
            assert entry["tokens"] * 2 == len(raw)
    stats = manifest["stats"]
    assert stats["documents_in"] == stats["documents_out"] == 120
    assert stats["train"]["documents"] + stats["val"]["documents"] == 120


def test_one_and_two_workers_give_identical_shards(registry, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 400)
    spec = make_spec(registry, corpus, BPE, shard_tokens=3000)
    tokenizer, one, run = stage(spec, tmp_path / "run", registry, workers=1)
    sha = file_sha256(run.tokenizer)
    two = prepare_shards(tmp_path / "data2", spec.data, tokenizer, sha, workers=2)
    assert shard_files(run.data) == shard_files(tmp_path / "data2")
    assert one.manifest["shards"] == two.manifest["shards"] and one.manifest["stats"] == two.manifest["stats"]
    assert len(one.manifest["shards"]["train"]) >= 3
    check_shards(tmp_path / "data2", spec.data, tokenizer)


def test_progress_is_reported(registry, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 100)
    spec = make_spec(registry, corpus)
    calls = []
    stage(spec, tmp_path / "run", registry, on_progress=lambda docs, nbytes: calls.append((docs, nbytes)))
    assert sum(d for d, _ in calls) == 100
    assert sum(b for _, b in calls) == sum(len(t.encode()) for s in SPLITS for t in split_documents(spec.data, s))


# --------------------------------------------------------------------------- idempotence and repair
@pytest.fixture
def prepared(registry, tmp_path):
    """A bytes-tokenized corpus in several shards per split: (spec, tokenizer, run, manifest, files)."""
    corpus = write_corpus(tmp_path / "corpus", 200)
    spec = make_spec(registry, corpus, "bytes", shard_tokens=2500)
    tokenizer, result, run = stage(spec, tmp_path / "run", registry)
    assert len(result.manifest["shards"]["train"]) >= 4 and len(result.manifest["shards"]["val"]) >= 2
    age(run.data)
    return spec, tokenizer, run, result.manifest, shard_files(run.data)


def again(prepared, workers=1):
    spec, tokenizer, run, _, _ = prepared
    return prepare_shards(run.data, spec.data, tokenizer, file_sha256(run.tokenizer), workers=workers)


def test_rerunning_does_no_work(prepared):
    _, _, run, manifest, files = prepared
    manifest_mtime = (run.data / "manifest.json").stat().st_mtime_ns
    result = again(prepared)
    assert result.skipped and result.built == 0 and not result.repaired
    assert result.reused == sum(len(manifest["shards"][s]) for s in SPLITS)
    assert set(mtimes(run.data).values()) == {OLD_NS}
    assert (run.data / "manifest.json").stat().st_mtime_ns == manifest_mtime
    assert shard_files(run.data) == files


def test_a_truncated_shard_is_detected_and_only_it_is_rebuilt(prepared):
    _, _, run, manifest, files = prepared
    victim = manifest["shards"]["train"][1]["file"]
    path = run.data / victim
    path.write_bytes(path.read_bytes()[:-10])
    os.utime(path, ns=(OLD_NS, OLD_NS))
    result = again(prepared)
    assert not result.skipped and result.built == 1
    assert len(result.repaired) == 1 and victim in result.repaired[0]
    after = mtimes(run.data)
    assert after[victim] != OLD_NS
    assert all(t == OLD_NS for name, t in after.items() if name != victim)
    assert shard_files(run.data) == files
    assert read_manifest(run.data)["shards"] == manifest["shards"]
    assert again(prepared).skipped


def test_a_corrupted_byte_is_detected_by_hash(prepared):
    _, _, run, manifest, files = prepared
    victim = manifest["shards"]["val"][0]["file"]
    raw = bytearray((run.data / victim).read_bytes())
    raw[7] ^= 0x01
    (run.data / victim).write_bytes(bytes(raw))  # same size
    os.utime(run.data / victim, ns=(OLD_NS, OLD_NS))
    result = again(prepared)
    assert result.built == 1 and len(result.repaired) == 1
    assert victim in result.repaired[0] and "sha256" in result.repaired[0]
    assert shard_files(run.data) == files
    assert [n for n, t in mtimes(run.data).items() if t != OLD_NS] == [victim]


def test_a_deleted_shard_file_is_rebuilt(prepared):
    _, _, run, manifest, files = prepared
    victim = manifest["shards"]["train"][-1]["file"]
    (run.data / victim).unlink()
    result = again(prepared)
    assert result.built == 1 and "missing" in result.repaired[0]
    assert shard_files(run.data) == files
    assert [n for n, t in mtimes(run.data).items() if t != OLD_NS] == [victim]


def test_an_interrupted_run_resumes_with_only_the_missing_shards(prepared):
    _, _, run, manifest, files = prepared
    cut = json.loads((run.data / "manifest.json").read_text())
    lost = [e["file"] for e in cut["shards"]["train"][-2:]]
    cut["shards"]["train"] = cut["shards"]["train"][:-2]
    cut["complete"] = False
    del cut["stats"]
    (run.data / "manifest.json").write_text(json.dumps(cut))
    (run.data / lost[-1]).unlink()  # one never written, one written but not yet recorded
    result = again(prepared)
    assert not result.skipped and result.built == 2 and not result.repaired
    assert result.reused == sum(len(manifest["shards"][s]) for s in SPLITS) - 2
    assert sorted(n for n, t in mtimes(run.data).items() if t != OLD_NS) == sorted(lost)
    assert shard_files(run.data) == files
    assert read_manifest(run.data) == manifest


def crash_on_write(monkeypatch, n: int) -> None:
    """Make the ``n``-th atomic write of the shard stage raise, as a crash there would."""
    writes = {"n": 0}
    real_write = shards_mod.atomic_write_bytes

    def write(path, data):
        writes["n"] += 1
        if writes["n"] == n:
            raise KeyboardInterrupt("simulated crash")
        return real_write(path, data)

    monkeypatch.setattr(shards_mod, "atomic_write_bytes", write)


def test_a_crash_mid_run_leaves_a_consistent_state_that_resumes(prepared, monkeypatch):
    spec, tokenizer, run, manifest, files = prepared
    fresh = run.data.parent / "fresh"
    crash_on_write(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        prepare_shards(fresh, spec.data, tokenizer, file_sha256(run.tokenizer), workers=1)
    monkeypatch.undo()
    partial = read_manifest(fresh)
    assert partial is not None and partial["complete"] is False
    assert sum(len(partial["shards"][s]) for s in SPLITS) == 2
    assert no_temp_files(fresh)
    result = prepare_shards(fresh, spec.data, tokenizer, file_sha256(run.tokenizer), workers=1)
    assert result.reused == 2 and result.built == sum(len(manifest["shards"][s]) for s in SPLITS) - 2
    assert shard_files(fresh) == files
    assert read_manifest(fresh)["shards"] == manifest["shards"]


def test_a_repair_interrupted_midway_is_finished_by_the_next_run(prepared, monkeypatch):
    """Two damaged shards, a crash after the first is rebuilt: the second must not be forgotten."""
    _, _, run, manifest, files = prepared
    victims = [manifest["shards"]["train"][1]["file"], manifest["shards"]["train"][3]["file"]]
    for name in victims:
        (run.data / name).write_bytes((run.data / name).read_bytes()[:-4])
    crash_on_write(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        again(prepared)
    monkeypatch.undo()
    result = again(prepared)
    assert len(result.repaired) == 1 and victims[1] in result.repaired[0] and result.built == 1
    assert shard_files(run.data) == files
    assert read_manifest(run.data)["shards"] == manifest["shards"]


def test_changing_the_data_config_rebuilds_and_removes_stale_shards(prepared, registry):
    spec, tokenizer, run, manifest, files = prepared
    before = sum(len(manifest["shards"][s]) for s in SPLITS)
    changed = make_spec(registry, spec.data.paths, "bytes", shard_tokens=2500, min_chars=150)
    result = prepare_shards(run.data, changed.data, tokenizer, file_sha256(run.tokenizer), workers=1)
    assert not result.skipped and result.reused == 0 and result.built >= 2
    after = result.manifest
    assert after["config"]["data"]["min_chars"] == 150 and after["stats"]["too_short"] > 0
    assert sum(len(after["shards"][s]) for s in SPLITS) < before
    assert sorted(p.name for p in run.data.glob("*.bin")) == sorted(
        e["file"] for s in SPLITS for e in after["shards"][s])
    check_shards(run.data, changed.data, tokenizer)
    # and back: the old configuration is rebuilt, identical to before
    result = prepare_shards(run.data, spec.data, tokenizer, file_sha256(run.tokenizer), workers=1)
    assert result.built == before and shard_files(run.data) == files


def test_settings_that_do_not_change_the_shards_do_not_rebuild(prepared, registry):
    spec, tokenizer, run, _, _ = prepared
    same = make_spec(registry, spec.data.paths, "bytes", shard_tokens=2500, workers=3, val_windows=7)
    result = prepare_shards(run.data, same.data, tokenizer, file_sha256(run.tokenizer), workers=1)
    assert result.skipped and result.built == 0
    assert set(mtimes(run.data).values()) == {OLD_NS}


def test_a_different_tokenizer_hash_rebuilds(prepared):
    spec, tokenizer, run, _, _ = prepared
    result = prepare_shards(run.data, spec.data, tokenizer, "0" * 64, workers=1)
    assert not result.skipped and result.reused == 0
    assert result.manifest["config"]["tokenizer_sha256"] == "0" * 64


def test_a_changed_corpus_file_rebuilds(prepared):
    spec, tokenizer, run, _, _ = prepared
    corpus = Path(spec.data.paths[0])
    (corpus / "new.txt").write_text("a brand new document in the corpus", encoding="utf-8")
    result = again(prepared)
    assert not result.skipped and result.reused == 0
    check_shards(run.data, spec.data, tokenizer)


def test_writes_are_atomic(prepared, monkeypatch):
    _, _, run, manifest, _ = prepared
    assert no_temp_files(run.data)
    seen = []
    real = shards_mod.atomic_write_text
    monkeypatch.setattr(shards_mod, "atomic_write_text",
                        lambda path, text: seen.append(Path(path).name) or real(path, text))
    real_bytes = shards_mod.atomic_write_bytes
    monkeypatch.setattr(shards_mod, "atomic_write_bytes",
                        lambda path, data: seen.append(Path(path).name) or real_bytes(path, data))
    (run.data / manifest["shards"]["train"][0]["file"]).unlink()
    again(prepared)
    assert seen == [manifest["shards"]["train"][0]["file"], "manifest.json", "manifest.json"]
    assert no_temp_files(run.data)


# --------------------------------------------------------------------------- bad input
def test_an_empty_corpus_names_min_chars(registry, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 10, lo=1, hi=3)
    spec = make_spec(registry, corpus, "bytes", min_chars=500)
    with pytest.raises(CorekitError) as exc:
        stage(spec, tmp_path / "run", registry)
    message = str(exc.value)
    assert "min_chars" in message and "500" in message and "10 documents" in message
    assert not (read_manifest(tmp_path / "run" / "data") or {}).get("complete")


def test_an_empty_corpus_is_refused_before_training_a_tokenizer(registry, tmp_path):
    """A bpe tokenizer trained on nothing must not be saved: the run would keep it."""
    corpus = write_corpus(tmp_path / "corpus", 10, lo=1, hi=3)
    spec = make_spec(registry, corpus, BPE, min_chars=500)
    run = RunDir(tmp_path / "run")
    with pytest.raises(CorekitError, match="min_chars"):
        ensure_tokenizer(spec, run, registry)
    assert not run.tokenizer.exists()


def test_a_val_split_the_hashes_leave_empty_gets_one_document(registry, tmp_path):
    """Three documents that all hash to train at val_fraction=0.001: one moves to val, with a note."""
    corpus = write_corpus(tmp_path / "corpus", 3)
    spec = make_spec(registry, corpus, "bytes", val_fraction=0.001)
    with pytest.warns(UserWarning, match="val split would be empty"):
        _, result, _ = stage(spec, tmp_path / "run", registry)
    stats = result.manifest["stats"]
    assert (stats["train"]["documents"], stats["val"]["documents"]) == (2, 1)
    assert any("moved to val" in note for note in result.manifest["notes"])


def test_a_tokenizer_without_endoftext_is_refused_at_prepare(registry, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 10)
    spec = make_spec(registry, corpus, {"name": "bytes", "special_tokens": []})
    run = RunDir(tmp_path / "run")
    tokenizer, _ = ensure_tokenizer(spec, run, registry)
    with pytest.raises(CorekitError) as exc:
        prepare_shards(run.data, spec.data, tokenizer, file_sha256(run.tokenizer), workers=1)
    assert "<|endoftext|>" in str(exc.value) and "special_tokens" in str(exc.value)
    assert not run.data.exists() or not list(run.data.glob("*.bin"))


@pytest.mark.parametrize("table", [
    {"name": "bpe", "vocab_size": 200},
    {"name": "bpe", "vocab_size": 258, "special_tokens": ["<|endoftext|>", "<|user|>", "<|assistant|>"]},
])
def test_a_bpe_vocabulary_too_small_for_the_specials_names_the_field(registry, table):
    with pytest.raises(SpecError) as exc:
        load_spec({"model": model_section(), "tokenizer": table}, registry=registry)
    assert "tokenizer.vocab_size" in [i.path for i in exc.value.issues]
    assert "tokenizer.vocab_size" in str(exc.value)


def test_a_glob_matching_nothing_fails_the_stage_naming_it(registry, tmp_path):
    spec = make_spec(registry, ["nothing/here/*.txt"], "bytes")
    with pytest.raises(CorekitError) as exc:
        prepare_shards(tmp_path / "data", spec.data, registry.build("tokenizer", spec.tokenizer), "x", workers=1)
    assert "data.paths[0]" in str(exc.value) and "nothing/here/*.txt" in str(exc.value)


# --------------------------------------------------------------------------- the tokenizer stage
def test_ensure_tokenizer_trains_once_then_loads(registry, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 60)
    spec = make_spec(registry, corpus, BPE)
    run = RunDir(tmp_path / "run")
    first, trained = ensure_tokenizer(spec, run, registry)
    assert trained and run.tokenizer.is_file() and run.spec.is_file()
    saved = run.tokenizer.read_bytes()
    os.utime(run.tokenizer, ns=(OLD_NS, OLD_NS))
    second, trained = ensure_tokenizer(make_spec(registry, corpus, BPE), run, registry)
    assert not trained
    assert run.tokenizer.read_bytes() == saved and run.tokenizer.stat().st_mtime_ns == OLD_NS
    sample = "alpha beta (0042) the of and <|endoftext|> zeta\n"
    assert second.encode(sample) == first.encode(sample)
    assert second.vocab_size == first.vocab_size and second.eot_id == first.eot_id == 0


def test_the_bytes_tokenizer_needs_no_corpus(registry, tmp_path):
    spec = make_spec(registry, ["nothing/*.txt"], "bytes")  # the corpus is not read to make it
    run = RunDir(tmp_path / "run")
    tokenizer, trained = ensure_tokenizer(spec, run, registry)
    assert tokenizer.vocab_size == 257 and tokenizer.eot_id == 256
    assert trained and run.tokenizer.is_file()  # saved all the same, for later stages


@pytest.mark.parametrize("tok,multiple", [(CHAR, 64), (BPE, 64), (CHAR, None)])
def test_spec_toml_records_the_resolved_spec_and_vocab_size(registry, tmp_path, tok, multiple):
    corpus = write_corpus(tmp_path / "corpus", 60)
    model = model_section(pad_vocab_multiple=multiple) if multiple else model_section()
    spec = make_spec(registry, corpus, tok, model=model, shard_tokens=5000)
    run = RunDir(tmp_path / "run")
    tokenizer, _ = ensure_tokenizer(spec, run, registry)
    stored = tomllib.loads(run.spec.read_text(encoding="utf-8"))
    size = tokenizer.vocab_size
    vocab = stored["model"]["vocab_size"]
    assert vocab == padded_vocab(size, multiple) and vocab >= size
    if multiple:
        assert vocab % multiple == 0 and vocab - size < multiple
    else:
        assert vocab == size
    assert stored["tokenizer"]["name"] == tok["name"]
    assert stored["data"]["paths"] == [str(corpus)] and stored["data"]["shard_tokens"] == 5000
    assert stored["data"]["min_chars"] == 1 and stored["data"]["val_fraction"] == 0.2
    assert stored["model"]["d_model"] == 32 and stored["model"]["attention"]["n_heads"] == 4
    # the recorded spec is a valid spec, equal to the resolved one
    assert load_spec(run.spec, registry=registry).model_dump() == spec.model_dump()


def test_changing_the_tokenizer_of_an_existing_run_is_refused(registry, tmp_path):
    corpus = write_corpus(tmp_path / "corpus", 60)
    run = RunDir(tmp_path / "run")
    ensure_tokenizer(make_spec(registry, corpus, BPE), run, registry)
    saved, spec_text = run.tokenizer.read_bytes(), run.spec.read_text()
    for other in ({"name": "bpe", "vocab_size": 384}, CHAR, "bytes"):
        with pytest.raises(CorekitError) as exc:
            ensure_tokenizer(make_spec(registry, corpus, other), run, registry)
        assert "--run-dir" in str(exc.value) and str(run.path) in str(exc.value)
        assert run.tokenizer.read_bytes() == saved and run.spec.read_text() == spec_text


# --------------------------------------------------------------------------- review regressions
def test_jsonl_with_surrogates_and_a_bom(registry, tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [json.dumps({"text": "bad \ud800 surrogate in an otherwise long enough line"}),
             json.dumps({"text": "a second document that is also long enough"})]
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    spec = make_spec(registry, [str(path)], val_fraction=0.01)
    texts = list(split_documents(spec.data, "train")) + list(split_documents(spec.data, "val"))
    assert len(texts) == 2 and any(t.startswith("bad \ufffd") and "surrogate" in t for t in texts)


def test_unknown_character_error_names_the_document(registry, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("plain ascii text " * 10)
    (corpus / "b.txt").write_text("plain ascii text with one snowman \u2603 " * 3)
    spec = make_spec(registry, [str(corpus)], tokenizer={"name": "char", "unknown": "error"})
    run = RunDir(tmp_path / "run")
    tokenizer = registry.build("tokenizer", spec.tokenizer).train(["plain ascii text with one snowman"])
    tokenizer.save(run.tokenizer)  # trained without the snowman
    for workers in (1, 2):
        with pytest.raises(CorekitError, match=r"b\.txt.*'\u2603'"):
            prepare_shards(run.data, spec.data, tokenizer, file_sha256(run.tokenizer), workers=workers)


def test_leftover_temporary_files_are_removed(registry, tmp_path):
    spec = make_spec(registry, write_corpus(tmp_path / "c", 20))
    data_dir = tmp_path / "run" / "data"
    data_dir.mkdir(parents=True)
    (data_dir / ".train_000000.bin.abc123.tmp").write_bytes(b"half")
    stage(spec, tmp_path / "run", registry)
    assert no_temp_files(data_dir)


def test_a_failed_rebuild_keeps_the_previous_dataset(registry, tmp_path):
    corpus = write_corpus(tmp_path / "c", 60)
    spec = make_spec(registry, corpus, shard_tokens=200)
    tokenizer, first, run = stage(spec, tmp_path / "run", registry)
    before = shard_files(run.data)
    (corpus / "zzz.jsonl").write_text('{"oops": 1}\n')  # a bad line at the end of the corpus
    broken = make_spec(registry, [str(corpus)], shard_tokens=200)
    with pytest.raises(CorekitError, match="zzz.jsonl:1"):
        prepare_shards(run.data, broken.data, tokenizer, file_sha256(run.tokenizer), workers=1)
    assert read_manifest(run.data)["complete"] and shard_files(run.data) == before
    (corpus / "zzz.jsonl").write_text('{"text": "a new document, long enough to keep"}\n')
    result = prepare_shards(run.data, broken.data, tokenizer, file_sha256(run.tokenizer), workers=1)
    assert result.built > 0 and read_manifest(run.data)["complete"]
    assert not (tmp_path / "run" / "data.next").exists() and not (tmp_path / "run" / "data.old").exists()
    assert read_manifest(run.data)["stats"]["documents_out"] == first.manifest["stats"]["documents_out"] + 1


def test_a_swap_interrupted_between_renames_is_recovered(registry, tmp_path):
    spec = make_spec(registry, write_corpus(tmp_path / "c", 30))
    _, _, run = stage(spec, tmp_path / "run", registry)
    before = shard_files(run.data)
    run.data.rename(run.data.with_name("data.old"))  # the crash: old moved away, new not in place
    _, result, _ = stage(spec, tmp_path / "run", registry)
    assert result.skipped and shard_files(run.data) == before
