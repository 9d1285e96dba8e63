"""``corekit compress`` and the ``[compress]`` stage of ``corekit run``: the new run, its report,
composition of compressors, and refusals that leave nothing behind."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import run_cli

from corekit.compress.base import Compressed, Compressor
from corekit.compress.run import REPORT, compress_run, compressor_params
from corekit.errors import CorekitError, SpecError
from corekit.io import link_tree
from corekit.spec import load_spec, read_spec_file

pytestmark = pytest.mark.slow


def test_cli_writes_a_run_and_a_report(trained_run, tmp_path, capsys):
    out = tmp_path / "pruned"
    code, stdout, err = run_cli(capsys, "compress", str(trained_run), "--with", "prune", "--set", "sparsity=0.25",
                                "--out", str(out))
    assert code == 0, err
    assert {"spec.toml", "tokenizer.json", "model.safetensors", REPORT, "data"} <= {p.name for p in out.iterdir()}
    report = json.loads((out / REPORT).read_text())
    assert report["compressor"]["name"] == "prune" and report["compressor"]["sparsity"] == 0.25
    for side in ("before", "after"):
        assert {"parameters", "nonzero_parameters", "weight_bytes", "val_perplexity",
                "decode_tokens_per_s"} <= set(report[side])
    assert report["after"]["nonzero_parameters"] < report["before"]["nonzero_parameters"]
    assert "non-zero parameters" in stdout and "CPU decode tokens/s" in stdout
    # the data shards are the source's, shared (hard links), not copied again
    shard = next((trained_run / "data").glob("*.bin"), None) or next((trained_run / "data").iterdir())
    assert (out / "data" / shard.name).stat().st_ino == shard.stat().st_ino
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_an_existing_compressed_run_is_replaced_but_other_dirs_are_refused(trained_run, registry, tmp_path):
    params = compressor_params("prune", ["sparsity=0.1"], registry)
    out = tmp_path / "out"
    compress_run(trained_run, params, out, registry=registry, measure_speed=False)
    first = (out / "model.safetensors").read_bytes()
    params = compressor_params("prune", ["sparsity=0.6"], registry)
    compress_run(trained_run, params, out, registry=registry, measure_speed=False)
    assert (out / "model.safetensors").read_bytes() != first
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(CorekitError, match="not a compressed run"):
        compress_run(trained_run, params, other, registry=registry)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    with pytest.raises(CorekitError, match="is the run being compressed"):
        compress_run(trained_run, params, trained_run, registry=registry)


class _Exploding(Compressor):
    def compress(self, source, work_dir, progress):
        (work_dir / "scratch").write_text("half done")
        raise RuntimeError("boom")


class _WrongShape(Compressor):
    def compress(self, source, work_dir, progress):
        spec = source.spec.model_copy(deep=True)
        spec.model.n_layers = 1  # claims a shape the weights do not have
        return Compressed(source.load_model(), spec)


@pytest.mark.parametrize("impl, error", [(_Exploding, RuntimeError), (_WrongShape, CorekitError)])
def test_a_failing_compressor_leaves_nothing_behind(impl, error, trained_run, registry, tmp_path):
    params = compressor_params("quantize", [], registry)
    original = registry.get("compressor", "quantize")
    registry.add("compressor", type(params), lambda p: impl(p), override=True)
    try:
        with pytest.raises(error):
            compress_run(trained_run, params, tmp_path / "out", registry=registry, measure_speed=False)
    finally:
        registry.add("compressor", original.params, original.build, override=True)
    assert list(tmp_path.iterdir()) == []


def test_untrained_run_and_unknown_compressor_are_clear_errors(tmp_path, capsys, registry):
    code, _, err = run_cli(capsys, "compress", str(tmp_path / "nope"), "--with", "quantize",
                           "--out", str(tmp_path / "x"))
    assert code == 2 and "not a trained run" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "compress", str(tmp_path), "--with", "shrink", "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown compressor 'shrink'" in err and "quantize" in err
    with pytest.raises(SpecError, match=r"prune\.sparsity"):
        compressor_params("prune", ["sparsity=1.5"], registry)
    assert not (tmp_path / "x").exists()


def test_run_stage_prunes_then_quantizes_then_exports_and_skips_when_current(trained_run, tmp_path, capsys):
    from corekit.edge.manifest import read_manifest

    run = tmp_path / "run"
    link_tree(trained_run, run)
    spec = (trained_run / "spec.toml").read_text()
    spec += """
[[compress]]
name = "prune"
method = "structured"
sparsity = 0.5

[[compress]]
name = "quantize"
bits = 4

[export]
quantize = "none"
"""
    (tmp_path / "spec.toml").write_text(spec)
    code, stdout, err = run_cli(capsys, "run", str(tmp_path / "spec.toml"), "--run-dir", str(run))
    assert code == 0, err
    pruned, quantized = run / "compress" / "1-prune", run / "compress" / "2-quantize"
    final = load_spec(quantized / "spec.toml")
    assert [c.name for c in final.change_params("compressor")] == ["prune", "quantize"]
    assert final.model.attention.n_heads == 2 and final.model.attention.head_dim == 16
    assert json.loads((quantized / REPORT).read_text())["source"]["run"] == str(pruned)
    manifest = read_manifest(run / "export")
    assert manifest["weights"] == "int4+int8" and manifest["cache"]["n_kv_heads"] == 1
    assert manifest["verification"]["stored_integers_max_abs_logit_diff"] <= 1e-4
    assert "changes" not in read_spec_file(run / "spec.toml")  # the trained run itself is untouched
    stamp = (quantized / "model.safetensors").stat().st_mtime_ns
    code, stdout, err = run_cli(capsys, "run", str(tmp_path / "spec.toml"), "--run-dir", str(run))
    assert code == 0, err
    assert " ".join(err.split()).count("is current; skipped") == 3  # both compress steps and the export
    assert (quantized / "model.safetensors").stat().st_mtime_ns == stamp


def test_shared_tensors_are_stored_once_and_retied(registry, tmp_path):
    from safetensors import safe_open

    from corekit.weights import load_weights, save_weights
    from helpers import tiny_model

    spec = load_spec({"model": {"context_length": 32, "d_model": 32, "n_layers": 1, "vocab_size": 257,
                                "attention": {"name": "mha", "n_heads": 4}}}, registry=registry)
    model = tiny_model(registry, n_layers=1, vocab_size=257)
    save_weights(model, spec, registry, tmp_path / "w.safetensors")
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as fh:
        assert "lm_head.weight" not in fh.keys() and "tok_emb.weight" in fh.keys()
        assert json.loads(fh.metadata()["shared"]) == {"lm_head.weight": "tok_emb.weight"}
    fresh = tiny_model(registry, seed=1, n_layers=1, vocab_size=257)
    load_weights(fresh, tmp_path / "w.safetensors")
    assert fresh.lm_head.weight is fresh.tok_emb.weight
    assert torch.equal(fresh.tok_emb.weight, model.tok_emb.weight)
    untied = tiny_model(registry, seed=1, n_layers=1, vocab_size=257, tie_embeddings=False)
    with pytest.raises(CorekitError, match="missing"):  # an untied model needs its own head
        load_weights(untied, tmp_path / "w.safetensors")


def test_a_distilled_student_starts_a_fresh_changes_list(trained_run, registry, tmp_path):
    pruned = tmp_path / "pruned"
    compress_run(trained_run, compressor_params("prune", ["sparsity=0.3"], registry), pruned, registry=registry,
                 measure_speed=False)
    params = compressor_params("distill", ["student.n_layers=1", "steps=2"], registry)
    report = compress_run(pruned, params, tmp_path / "student", registry=registry, measure_speed=False)
    spec = load_spec(tmp_path / "student" / "spec.toml", registry=registry)
    assert [c.name for c in spec.change_params("compressor")] == ["distill"] and spec.model.n_layers == 1
    # the lineage stays in the report
    assert [c["compressor"]["name"] for c in report["source"]["changes"]] == ["prune"]


def test_recovery_schedules_keep_their_shape_and_compressed_specs_do_not_train(trained_run, registry, tmp_path):
    from corekit.rundir import RunDir
    from corekit.train.fit import train, with_steps

    spec = load_spec(trained_run / "spec.toml", registry=registry)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={
        "max_steps": 600, "scheduler": spec.train.scheduler.model_copy(update={"warmup_steps": 60})})})
    short = with_steps(spec, 100)
    assert (short.train.max_steps, short.train.scheduler.warmup_steps) == (100, 10)
    assert with_steps(spec, 5).train.scheduler.warmup_steps == 0 + round(60 * 5 / 600)
    data = read_spec_file(trained_run / "spec.toml")
    data["changes"] = [{"compressor": {"name": "quantize"}}]
    with pytest.raises(CorekitError, match=r"a later stage changed \(compressor quantize\)"):
        train(load_spec(data, registry=registry), RunDir(tmp_path / "run"), registry)
    assert not (tmp_path / "run").exists()


def test_compress_dot_defaults_to_a_sibling_directory(trained_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "mine"
    link_tree(trained_run, run)
    monkeypatch.chdir(run)
    code, _, err = run_cli(capsys, "compress", ".", "--with", "prune", "--set", "sparsity=0.1", "--no-speed")
    assert code == 0, err
    assert (tmp_path / "mine-prune" / REPORT).is_file()


def test_a_student_drops_the_teachers_explicit_head_width_when_reshaped(trained_run, registry):
    from corekit.compress.base import SourceRun
    from corekit.rundir import RunDir

    data = read_spec_file(trained_run / "spec.toml")
    data["model"]["attention"] = {**data["model"]["attention"], "n_heads": 2, "n_kv_heads": 1, "head_dim": 16}
    source = SourceRun(RunDir(trained_run), load_spec(data, registry=registry), registry, None)
    narrow = registry.build("compressor", compressor_params("distill", ["student.d_model=32"], registry))
    assert narrow._student_spec(source).model.context().head_dim == 16  # 32 / 2 heads, not the teacher's 16 forced
    assert narrow._student_spec(source).model.attention.head_dim is None
    deeper = registry.build("compressor", compressor_params("distill", ["student.n_layers=1"], registry))
    assert deeper._student_spec(source).model.attention.head_dim == 16  # same width: the teacher's heads kept
