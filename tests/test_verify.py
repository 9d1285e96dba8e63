"""Checksums on a run's artifacts, checked where they are read, and `corekit verify`."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from helpers import flip_byte, run_cli


@pytest.fixture
def copied(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


def test_a_trained_run_records_the_checksums_of_its_files_and_verifies(copied, capsys):
    for name in ("model.safetensors", "tokenizer.json"):
        recorded = (copied / f"{name}.sha256").read_text().strip()
        assert recorded == hashlib.sha256((copied / name).read_bytes()).hexdigest(), name
    assert list((copied / "checkpoints").glob("*.ckpt.sha256"))
    code, out, err = run_cli(capsys, "verify", str(copied))
    assert code == 0, err
    assert "model.safetensors" in out and "all" in out and "sound" in out


@pytest.mark.parametrize("command", [["eval", "RUN"], ["generate", "RUN", "-p", "x", "-n", "2"],
                                     ["export", "onnx", "RUN"]])
def test_a_flipped_bit_in_the_weights_is_refused_where_they_are_read(copied, capsys, command):
    flip_byte(copied / "model.safetensors", (copied / "model.safetensors").stat().st_size - 100)
    code, _, err = run_cli(capsys, *[str(copied) if word == "RUN" else word for word in command])
    assert code == 2 and "Traceback" not in err
    assert "model.safetensors" in err and "sha256" in err
    assert not (copied / "export").exists()
    code, out, _ = run_cli(capsys, "verify", str(copied))
    assert code == 2 and "model.safetensors" in out


def test_an_edited_tokenizer_is_refused(copied, capsys):
    data = json.loads((copied / "tokenizer.json").read_text())
    (copied / "tokenizer.json").write_text(json.dumps(data, indent=1))  # same content, other bytes: still edited
    code, _, err = run_cli(capsys, "generate", str(copied), "-p", "x", "-n", "2")
    assert code == 2 and "tokenizer.json" in err and "sha256" in err and "Traceback" not in err


def test_damaged_or_hostile_shards_are_refused_where_they_are_read(copied, capsys):
    manifest = json.loads((copied / "data" / "manifest.json").read_text())
    val = manifest["shards"]["val"][0]
    shard = copied / "data" / val["file"]
    flip_byte(shard, 0)
    code, _, err = run_cli(capsys, "eval", str(copied))
    assert code == 2 and val["file"] in err and "sha256" in err
    # ids beyond the vocabulary, with a manifest that matches them
    ids = np.fromfile(shard, dtype=manifest["config"]["dtype"])
    ids[3] = manifest["config"]["vocab_size"] + 5
    ids.tofile(shard)
    val["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (copied / "data" / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capsys, "eval", str(copied))
    assert code == 2 and "token id" in err and val["file"] in err and "Traceback" not in err
    # a shard path that leaves the data directory
    val["file"] = "../../../../../../etc/passwd"
    (copied / "data" / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capsys, "eval", str(copied))
    assert code == 2 and "outside" in err and "Traceback" not in err
    code, out, _ = run_cli(capsys, "verify", str(copied))
    assert code == 2 and "outside" in out


def test_a_damaged_bundle_file_is_found_by_verify(copied, capsys):
    assert run_cli(capsys, "export", "onnx", str(copied))[0] == 0
    assert run_cli(capsys, "verify", str(copied / "export"))[0] == 0
    flip_byte(copied / "export" / "model.onnx", 200)
    for target in (copied / "export", copied):
        code, out, _ = run_cli(capsys, "verify", str(target))
        assert code == 2 and "model.onnx" in out


def test_a_run_written_before_checksums_still_opens(copied, capsys):
    for sidecar in copied.rglob("*.sha256"):
        sidecar.unlink()
    code, out, err = run_cli(capsys, "eval", str(copied))
    assert code == 0, err
    code, out, _ = run_cli(capsys, "verify", str(copied))
    assert code == 0 and "no checksum recorded" in out


def test_verify_refuses_what_is_not_a_run(tmp_path, capsys):
    code, _, err = run_cli(capsys, "verify", str(tmp_path))
    assert code == 2 and "neither a run directory" in err
