"""The ``quantize`` compressor: int8 per channel and int4 in groups, stored compactly, dequantised
on the fly or run through torch.ao's dynamic int8, and exported with the same integers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli, tiny_model

from corekit.run import load_run_model
from corekit.compress.run import REPORT, compress_run, compressor_params
from corekit.errors import SpecError
from corekit.modules.quantized import (
    QuantizedEmbedding, QuantizedLinear, dequantized_copy, pack_int4, quantize_tensor, quantized_modules, unpack_int4,
)
from corekit.spec import load_spec


# --------------------------------------------------------------------------- the arithmetic
@pytest.mark.parametrize("bits, group", [(8, None), (8, 16), (4, 16), (4, 32)])
def test_round_trip_is_within_half_a_step(bits, group):
    torch.manual_seed(0)
    w = torch.randn(24, 64) * torch.linspace(0.01, 3.0, 24)[:, None]  # rows of very different ranges
    q, scales = quantize_tensor(w, bits, group)
    qmax = 127 if bits == 8 else 7
    assert q.dtype == torch.int8 and int(q.abs().max()) <= qmax
    g = group or 64
    step = scales.repeat_interleave(g, dim=1)  # (24, 64): the scale each weight was rounded with
    deq = q.float() * step
    assert torch.all((w - deq).abs() <= step / 2 + 1e-6)
    # an independent reference: each group's scale is its max |w| / qmax
    expected = np.abs(w.numpy().reshape(24, 64 // g, g)).max(axis=-1) / qmax
    np.testing.assert_allclose(scales.numpy(), expected, rtol=1e-6)


def test_int4_packing_round_trips_and_uses_the_matmulnbits_nibble_order():
    q = torch.randint(-8, 8, (5, 12), dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.shape == (5, 6) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), q)
    # the even column sits in the low nibble, stored as q + 8
    assert int(packed[0, 0]) == (int(q[0, 0]) + 8) | ((int(q[0, 1]) + 8) << 4)


@pytest.mark.parametrize("bits, group", [(8, None), (4, 16)])
def test_quantized_linear_computes_the_dequantized_matmul(bits, group):
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 20, bias=True)
    module = QuantizedLinear.from_linear(linear, bits=bits, group_size=group)
    x = torch.randn(3, 5, 32)
    weight = module.dequantize()
    torch.testing.assert_close(module(x), F.linear(x, weight, linear.bias), rtol=0, atol=1e-6)
    error = (module(x) - linear(x)).abs().max() / linear(x).abs().max()
    assert error < (0.02 if bits == 8 else 0.2)
    assert module.qweight.dtype == (torch.int8 if bits == 8 else torch.uint8)
    assert module.qweight.numel() == 20 * 32 // (1 if bits == 8 else 2)


def test_dynamic_kernel_is_torch_ao_int8_and_close_to_the_dequantized_one():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    exact = QuantizedLinear.from_linear(linear)
    dynamic = QuantizedLinear.from_linear(linear, kernel="dynamic")
    x = torch.randn(4, 64)
    with torch.no_grad():
        got, want = dynamic(x), exact(x)
    assert type(dynamic._dynamic).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert not torch.equal(got, want)  # activations really were quantized
    assert (got - want).abs().max() <= 0.02 * want.abs().max()
    with pytest.raises(ValueError, match="dynamic"):
        QuantizedLinear.from_linear(linear, bits=4, group_size=16, kernel="dynamic")


def test_a_tied_table_is_shared_and_dequantized_copy_keeps_the_tie(registry):
    model = tiny_model(registry)
    quantizer = registry.build("compressor", {"name": "quantize"})
    q = quantizer._convert(model, quantize_now=True)
    assert isinstance(q.tok_emb, QuantizedEmbedding) and q.tok_emb.source() is q.lm_head
    assert not [k for k in q.state_dict() if k.startswith("tok_emb.")]  # the head holds the table
    ids = torch.tensor([[1, 5, 7]])
    torch.testing.assert_close(q.tok_emb(ids), q.lm_head.dequantize()[ids], rtol=0, atol=0)
    floats = dequantized_copy(q)
    assert floats.lm_head.weight is floats.tok_emb.weight and not quantized_modules(floats)
    torch.testing.assert_close(floats(ids), q(ids), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- compressing a run
@pytest.fixture(scope="module")
def int8_run(trained_run, registry, tmp_path_factory):
    out = tmp_path_factory.mktemp("quantized") / "int8"
    return out, compress_run(trained_run, compressor_params("quantize", [], registry), out, registry=registry)


@pytest.fixture(scope="module")
def int4_run(trained_run, registry, tmp_path_factory):
    out = tmp_path_factory.mktemp("quantized") / "int4"
    params = compressor_params("quantize", ["bits=4"], registry)  # the default group of 64
    assert params.group_size == 64
    return out, compress_run(trained_run, params, out, registry=registry, measure_speed=False)


def test_int8_run_is_a_quarter_of_fp32_and_keeps_the_predictions(int8_run, trained_run, registry):
    out, report = int8_run
    assert report["after"]["weight_bytes"] < 0.30 * report["before"]["weight_bytes"]
    assert report["after"]["parameters"] == report["before"]["parameters"]
    assert 0 <= report["kl_from_source"] < 1e-3
    ppl = report["before"]["val_perplexity"], report["after"]["val_perplexity"]
    assert abs(ppl[1] - ppl[0]) <= 0.01 * ppl[0]
    assert report["before"]["decode_tokens_per_s"] > 0 and report["after"]["decode_tokens_per_s"] > 0
    assert json.loads((out / REPORT).read_text())["kl_from_source"] == report["kl_from_source"]
    spec = load_spec(out / "spec.toml", registry=registry)
    assert [c.name for c in spec.change_params("compressor")] == ["quantize"] and spec.changes[0].compressor.bits == 8
    model = load_run_model(spec, out / "model.safetensors", registry)
    assert len(quantized_modules(model)) == 2 * 4 + 1  # qkv, out, up, down per block, and the head
    # logits of the reloaded run: close to the source model's, equal to its own dequantized weights
    source = load_run_model(load_spec(trained_run / "spec.toml", registry=registry),
                            trained_run / "model.safetensors", registry).eval()
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = model.eval()(ids), source(ids)
    assert (got - want).abs().max() < 0.05 * want.abs().max()
    kl = F.kl_div(F.log_softmax(got, -1), F.log_softmax(want, -1), log_target=True, reduction="batchmean")
    assert kl / ids.shape[1] < 1e-3


def test_int4_run_is_under_18_percent_and_stores_packed_nibbles(int4_run, int8_run, registry):
    out, report = int4_run
    assert report["after"]["weight_bytes"] < 0.18 * report["before"]["weight_bytes"]
    assert report["kl_from_source"] > int8_run[1]["kl_from_source"]  # fewer bits, more drift
    assert report["kl_from_source"] < 0.05
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        qkv = fh.get_tensor("blocks.0.attn.qkv.qweight")
        head = fh.get_tensor("lm_head.qweight")
        assert not [k for k in fh.keys() if k.startswith("tok_emb.")]  # the tied table, once
    assert qkv.dtype == torch.uint8 and qkv.shape == (128, 32)  # 64 inputs -> 32 bytes per row
    assert head.dtype == torch.int8  # the head stays 8-bit


def test_quantized_run_works_with_eval_and_generate(int8_run, capsys):
    out, _ = int8_run
    code, stdout, err = run_cli(capsys, "eval", str(out), "--windows", "4")
    assert code == 0, err
    assert "perplexity" in stdout
    code, stdout, err = run_cli(capsys, "generate", str(out), "--prompt", "one two", "-n", "8", "--temperature", "0")
    assert code == 0, err
    assert stdout.startswith("one two") and len(stdout) > len("one two")


@pytest.fixture(scope="module")
def dynamic_run(trained_run, registry, tmp_path_factory):
    out = tmp_path_factory.mktemp("quantized") / "dynamic"
    params = compressor_params("quantize", ["kernel='dynamic'"], registry)
    return out, compress_run(trained_run, params, out, registry=registry, measure_speed=False)


def test_dynamic_kernel_run_reloads_with_torch_ao_linears_and_saves_cleanly(dynamic_run, registry, tmp_path):
    from corekit.weights import save_weights

    out, report = dynamic_run
    spec = load_spec(out / "spec.toml", registry=registry)
    model = load_run_model(spec, out / "model.safetensors", registry).eval()
    assert all(m.kernel == "dynamic" for m in quantized_modules(model).values())
    keys = set(model.state_dict())
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))
    assert all(m._dynamic is not None for m in quantized_modules(model).values())
    assert set(model.state_dict()) == keys  # the packed torch.ao weights are a cache, never saved
    save_weights(model, spec, registry, tmp_path / "again.safetensors")
    assert report["kl_from_source"] < 0.01


# --------------------------------------------------------------------------- export
@pytest.mark.slow
def test_quantized_run_exports_its_own_integers(dynamic_run, tmp_path, registry):
    # the torch.ao kernel is a PyTorch runtime choice: the graph holds the same int8 integers as
    # any int8 run and is checked against the exact weight-only product (int4 export: the prune,
    # int4, export chain in tests/compress/test_compress_run.py)
    import onnx

    from corekit.edge.manifest import read_manifest
    from corekit.edge.runtime import EdgeModel
    from corekit.export.bundle import export_run

    out, _ = dynamic_run
    report = export_run(out, tmp_path / "bundle", quantize="int8")
    check = report.parity
    assert check["max_abs_logit_diff"] <= 1e-4 and check["stored_integers_max_abs_logit_diff"] <= 1e-4
    manifest = read_manifest(tmp_path / "bundle")
    assert manifest["weights"] == "int8"
    assert any("already" in note for note in report.notes)  # --quantize int8 is not applied twice
    graph = onnx.load(str(tmp_path / "bundle" / "model.onnx"))
    nbits = [n for n in graph.graph.node if n.op_type == "MatMulNBits"]
    bits = sorted({next(a.i for a in n.attribute if a.name == "bits") for n in nbits})
    assert len(nbits) == 9 and bits == [8]
    big_floats = [i.name for i in graph.graph.initializer
                  if i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) > 4096]
    assert not big_floats, big_floats  # no float weight matrix left, the embedding table included
    # the graph holds exactly the run's integers: greedy text from the edge runtime matches PyTorch
    spec = load_spec(out / "spec.toml", registry=registry)
    model = load_run_model(spec, out / "model.safetensors", registry).eval()
    for module in quantized_modules(model).values():
        module.kernel = "dequantize"  # the exact product, which the graph computes
    edge = EdgeModel(tmp_path / "bundle")
    from corekit.generation import generate

    tokenizer = registry.build("tokenizer", spec.tokenizer).load(out / "tokenizer.json")
    prompts = ["one two three", "def six_"]
    torch_text = generate(model, prompts, tokenizer=tokenizer, max_new_tokens=24, temperature=0)
    edge_ids = edge.generate([edge.encode(p) for p in prompts], max_new_tokens=24, temperature=0)
    assert [edge.decode(ids) for ids in edge_ids] == torch_text


def test_untied_quantized_embedding_exports_as_int8_rows(registry, tmp_path):
    from corekit.export.graph import export_graph
    from corekit.export.stored import write_stored_integers
    from corekit.export.verify import parity

    model = tiny_model(registry, tie_embeddings=False, position="rope", norm="rmsnorm")
    quantizer = registry.build("compressor", {"name": "quantize", "bits": 4, "group_size": 16})
    q = quantizer._convert(model, quantize_now=True).eval()
    assert isinstance(q.tok_emb, QuantizedEmbedding) and q.tok_emb.source() is not q.lm_head
    layout = export_graph(dequantized_copy(q), tmp_path / "float.onnx")
    counts = write_stored_integers(tmp_path / "float.onnx", tmp_path / "int.onnx", q)
    assert counts == {"matmuls": 9, "tables": 1}
    assert parity(q, tmp_path / "int.onnx", layout)["max_abs_logit_diff"] <= 1e-4


# --------------------------------------------------------------------------- refusals
def test_bad_settings_are_spec_errors_naming_the_field(registry):
    with pytest.raises(SpecError, match=r"quantize\.bits"):
        compressor_params("quantize", ["bits=3"], registry)
    with pytest.raises(SpecError, match="dynamic"):
        compressor_params("quantize", ["bits=4", "kernel='dynamic'"], registry)
    with pytest.raises(SpecError, match=r"quantize\.group_size"):
        compressor_params("quantize", ["bits=4", "group_size=48"], registry)


def test_quantizing_a_quantized_run_is_refused_and_writes_nothing(int8_run, registry, tmp_path, capsys):
    out, _ = int8_run
    code, _, err = run_cli(capsys, "compress", str(out), "--with", "quantize", "--out", str(tmp_path / "again"))
    assert code == 2 and "already quantized" in err and "Traceback" not in err
    assert not (tmp_path / "again").exists() and list(tmp_path.iterdir()) == []


def test_a_group_falls_back_to_one_that_divides_the_width(registry):
    from corekit_plugins.compressors.quantize import group_for

    assert [group_for(w, 64) for w in (128, 96, 32, 48, 40, 24)] == [64, 32, 32, 16, None, None]
    assert group_for(512, None) is None
    model = tiny_model(registry, d_model=48, attention={"name": "mha", "n_heads": 4})  # widths 48 and 192
    quantizer = registry.build("compressor", {"name": "quantize", "bits": 4, "group_size": 256})
    q = quantizer._convert(model, quantize_now=True)
    assert q.blocks[0].attn.qkv.group_size == 16 and q.blocks[0].mlp.down.group_size == 64
    assert (q.lm_head.bits, q.lm_head.group_size) == (8, 48)


def test_an_odd_width_keeps_that_layer_at_8_bits(registry):
    model = tiny_model(registry, mlp={"activation": "gelu", "hidden_dim": 99})
    q = registry.build("compressor", {"name": "quantize", "bits": 4})._convert(model, quantize_now=True)
    assert (q.blocks[0].mlp.down.bits, q.blocks[0].mlp.down.group_size) == (8, 99)
    assert q.blocks[0].mlp.up.bits == 4
