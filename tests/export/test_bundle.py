"""``corekit export onnx``: the bundle, its manifest, int8, failures and plugins."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from helpers import flip_byte, run_cli

from corekit import hookimpl
from corekit.edge.manifest import FORMAT_VERSION, MANIFEST, read_manifest
from corekit.edge.runtime import EdgeModel
from corekit.errors import CorekitError
from corekit.export.bundle import export_run
from corekit.io import file_sha256

pytestmark = pytest.mark.slow


def test_cli_export_writes_a_verified_bundle(capsys, trained_run, tmp_path):
    out = tmp_path / "bundle"
    code, stdout, err = run_cli(capsys, "export", "onnx", str(trained_run), "--out", str(out), "--opset", "21")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "model.onnx", "tokenizer.json"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["quantize"] == "none"
    for name in ("model.onnx", "tokenizer.json"):
        assert manifest["files"][name]["sha256"] == file_sha256(out / name)
    assert manifest["verification"]["max_abs_logit_diff"] <= 1e-4
    assert f"{manifest['verification']['max_abs_logit_diff']:.2e}" in stdout
    assert [i["name"] for i in manifest["inputs"]][:2] == ["input_ids", "attention_mask"]
    assert manifest["cache"] == {"n_layers": 2, "n_kv_heads": 2, "head_dim": 16}
    assert manifest["model"]["spec"]["attention"]["name"] == "gqa"
    assert manifest["tokenizer"]["special_tokens"] == {"<|endoftext|>": 256}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    import onnx  # the --opset asked for is the graph's opset

    model = onnx.load(str(out / "model.onnx"))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {21}
    assert manifest["opset"] == 21


def test_int8_bundle_is_smaller_keeps_perplexity_and_cache_agrees(bundle_int8, bundle):
    report = bundle_int8
    # (on this small model the graph's own structure is a large share of the file; the size
    # target is checked on the gpt2-small shape below)
    assert report.sizes["int8"] < report.sizes["float32"]
    ppl = report.perplexity
    assert ppl["float32"] > 1.0 and abs(ppl["int8"] - ppl["float32"]) <= 0.05 * ppl["float32"], ppl
    manifest = read_manifest(report.out)
    assert manifest["weights"] == "int8" and manifest["perplexity"] == ppl
    edge = EdgeModel(report.out)
    prompts = [edge.encode(p) for p in ["one two three", "def six_", "seven eight", "x + 4", "nine zero one two"]]
    cached = edge.generate(prompts, max_new_tokens=40, temperature=0)
    recomputed = edge.generate(prompts, max_new_tokens=40, temperature=0, use_cache=False)
    assert cached == recomputed
    assert all(len(ids) == 40 for ids in cached)  # no stop tokens: every row ran the full 40 steps
    # the int8 graph really is quantized: no float weight is left in any MatMul or Gather
    import onnx

    graph = onnx.load(str(report.out / "model.onnx")).graph
    weights = {i.name: i.data_type for i in graph.initializer}
    assert "MatMulNBits" in {n.op_type for n in graph.node}
    float_weights = [n.name for n in graph.node if n.op_type in ("MatMul", "Gather")
                     and weights.get(n.input[0 if n.op_type == "Gather" else 1]) == onnx.TensorProto.FLOAT]
    assert float_weights == []


def test_int8_perplexity_agrees_with_pytorch_for_fp32(bundle_int8, trained_run):
    from corekit.run import Run
    from corekit.train.evaluate import perplexity, validation_loss

    run = Run.open(trained_run)
    spec, model = run.spec, run.model()
    ppl = perplexity(validation_loss(model, trained_run / "data", spec.model.context_length, max_windows=32))
    assert bundle_int8.perplexity["float32"] == pytest.approx(ppl, rel=1e-4)


def test_gpt2_small_shape_int8_is_under_35_percent(registry, tmp_path):
    from corekit.assemble import build_model
    from corekit.spec import load_spec
    from corekit.weights import save_weights

    examples = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples"
    spec = load_spec(examples / "gpt2-small.toml", ["model.context_length=128"], registry)
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.toml").write_text((examples / "gpt2-small.toml").read_text().replace(
        "context_length = 1024", "context_length = 128"))
    tokenizer = registry.build("tokenizer", spec.tokenizer)
    if tokenizer.needs_training:
        tokenizer = tokenizer.train(["one two three four five six seven eight nine ten"] * 50)
    tokenizer.save(run / "tokenizer.json")
    torch.manual_seed(0)
    save_weights(build_model(spec.model, registry), spec, registry, run / "model.safetensors")
    report = export_run(run, tmp_path / "bundle", quantize="int8", registry=registry)
    ratio = report.sizes["int8"] / report.sizes["float32"]
    print(f"gpt2-small shape: fp32 {report.sizes['float32'] / 2**20:.1f} MiB, int8 "
          f"{report.sizes['int8'] / 2**20:.1f} MiB ({ratio:.1%})")
    assert report.sizes["float32"] > 4 * 120e6  # the whole fp32 model is in the file
    assert ratio < 0.35


class Wrapped(torch.nn.Module):
    """A model whose logits pass through ``change`` (a plugin's export-time replacement)."""

    def __init__(self, model, change):
        super().__init__()
        self.model, self.change = model, change
        self.vocab_size, self.context_length = model.vocab_size, model.context_length

    def new_cache(self):
        return self.model.new_cache()

    def forward(self, input_ids, attention_mask=None, cache=None):
        return self.change(self.model(input_ids, attention_mask, cache))


def ExportingDiffers(model):  # noqa: N802 - a module factory
    """Adds 1 to the logits only while being traced: a model whose graph is wrong."""
    return Wrapped(model, lambda logits: logits + 1 if torch.compiler.is_exporting() else logits)


def plugin_returning(factory):
    module = types.ModuleType("export_plugin_for_test")

    @hookimpl
    def corekit_prepare_export(model, spec):
        return factory(model)

    module.corekit_prepare_export = corekit_prepare_export
    return module


def test_a_failed_check_fails_the_export_and_keeps_the_old_bundle(capsys, trained_run, bundle, tmp_path, monkeypatch):
    import shutil

    from corekit.plugins import load_registry, set_registry

    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    before = {p.name: file_sha256(p) for p in out.iterdir()}
    set_registry(load_registry(autoload=False, plugins=[plugin_returning(ExportingDiffers)]))
    monkeypatch.setattr("corekit.plugins.configure", lambda *a, **k: None)  # keep the registry set above
    code, _, err = run_cli(capsys, "export", "onnx", str(trained_run), "--out", str(out))
    assert code == 2
    assert "export check failed" in err and "differ by up to 1" in err and "Traceback" not in err
    assert {p.name: file_sha256(p) for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_graph_that_computes_nan_fails_the_check(registry, tmp_path):
    from helpers import tiny_model

    from corekit.export.graph import export_graph
    from corekit.export.verify import parity

    nan_when_traced = Wrapped(tiny_model(registry, n_layers=1),
                              lambda logits: logits * float("nan") if torch.compiler.is_exporting() else logits)
    layout = export_graph(nan_when_traced, tmp_path / "m.onnx")
    assert parity(nan_when_traced, tmp_path / "m.onnx", layout)["max_abs_logit_diff"] == float("inf")


def test_prepare_export_hook_result_is_what_gets_exported(trained_run, bundle, tmp_path):
    from corekit.plugins import load_registry

    def Scaled(model):  # noqa: N802 - a module factory
        return Wrapped(model, lambda logits: 2 * logits)

    registry = load_registry(autoload=False, plugins=[plugin_returning(Scaled)])
    out = export_run(trained_run, tmp_path / "b", registry=registry).out
    edge = EdgeModel(out)
    ids = np.array([[1, 2, 3]])
    logits, _ = edge.forward(ids, np.ones_like(ids), edge.empty_past(1))
    plain = EdgeModel(bundle)
    reference, _ = plain.forward(ids, np.ones_like(ids), plain.empty_past(1))
    np.testing.assert_allclose(logits, 2 * reference, atol=1e-4)


SQUARED_RELU = '''
from typing import Literal
import torch
from corekit import hookimpl
from corekit.params import ActivationParams

class SquaredReLUParams(ActivationParams):
    name: Literal["squared_relu"] = "squared_relu"

class SquaredReLU(torch.nn.Module):
    def forward(self, x):
        return torch.relu(x) ** 2

def build(params, ctx):
    return SquaredReLU()

@hookimpl
def corekit_register_components(registry):
    registry.add("activation", SquaredReLUParams, build)
'''


def test_a_third_party_component_of_plain_torch_ops_exports(tmp_path, monkeypatch):
    from helpers import tiny_model

    from corekit.export.graph import export_graph
    from corekit.export.verify import parity
    from corekit.plugins import load_registry

    (tmp_path / "squared_relu_plugin.py").write_text(SQUARED_RELU)
    monkeypatch.syspath_prepend(str(tmp_path))
    import squared_relu_plugin

    registry = load_registry(autoload=False, plugins=[squared_relu_plugin])
    model = tiny_model(registry, mlp={"activation": "squared_relu"})
    layout = export_graph(model, tmp_path / "m.onnx")
    assert parity(model, tmp_path / "m.onnx", layout)["max_abs_logit_diff"] <= 1e-4
    sys.modules.pop("squared_relu_plugin", None)


def test_export_errors_are_clear(capsys, tmp_path, trained_run):
    code, _, err = run_cli(capsys, "export", "onnx", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b"))
    assert code == 2 and "Traceback" not in err and "nowhere" in err
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "export", "onnx", str(trained_run), "--out", str(tmp_path / "stuff"))
    assert code == 2 and "not a corekit bundle" in err
    assert (tmp_path / "stuff" / "keep.txt").read_text() == "mine"
    code, _, err = run_cli(capsys, "export", "onnx", str(trained_run), "--quantize", "int4")
    assert code == 2 and "none, int8" in err


def test_corekit_run_exports_when_the_spec_has_an_export_section(capsys, trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoints"))
    spec = tmp_path / "spec.toml"
    spec.write_text((trained_run.parent / "spec.toml").read_text() + '\n[export]\nformat = "onnx"\nquantize = "int8"\n')
    code, out, err = run_cli(capsys, "run", str(spec), "--run-dir", str(run), "-j", "1")
    assert code == 0, err
    manifest = read_manifest(run / "export")
    assert manifest["quantize"] == "int8"
    assert manifest["source"]["weights_sha256"] == file_sha256(run / "model.safetensors")
    assert "int8 model.onnx" in out
    code, out, err = run_cli(capsys, "run", str(spec), "--run-dir", str(run), "-j", "1")
    assert code == 0 and "is current; skipped" in " ".join(err.split())


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_weights_in_external_data_are_hashed_and_load(trained_run, bundle, tmp_path, monkeypatch, quantize):
    # the >2 GB path, made to happen on a small model by lowering both size thresholds
    monkeypatch.setattr("torch.onnx._internal.exporter._onnx_program._LARGE_MODEL_THRESHOLD", 0)
    monkeypatch.setattr("corekit.export.quantize.SAVE_EXTERNAL_ABOVE", 0)
    report = export_run(trained_run, tmp_path / "b", quantize=quantize)
    out = report.out
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "model.onnx", "model.onnx.data", "tokenizer.json"]
    assert report.manifest["files"]["model.onnx.data"]["sha256"] == file_sha256(out / "model.onnx.data")
    if quantize == "none":  # (int8 keeps small tensors, and the graph, in model.onnx)
        assert (out / "model.onnx").stat().st_size < (out / "model.onnx.data").stat().st_size
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.iterdir())  # readable by all, like other files
    assert report.sizes[{"none": "float32", "int8": "int8"}[quantize]] > (out / "model.onnx.data").stat().st_size
    prompts = [[1, 2, 3], [40, 41]]
    tokens = EdgeModel(out).generate(prompts, max_new_tokens=12, temperature=0)
    if quantize == "none":
        assert tokens == EdgeModel(bundle).generate(prompts, max_new_tokens=12, temperature=0)
    flip_byte(out / "model.onnx.data", 64)  # the weights file is checked like any other
    with pytest.raises(CorekitError, match="model.onnx.data does not match the sha256"):
        EdgeModel(out)
