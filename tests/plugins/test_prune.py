"""The ``prune`` compressor: unstructured sparsity, structured head/neuron removal, refusals."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from helpers import attention, model_section, run_cli, tiny_model

from corekit.run import load_run_model
from corekit.compress.base import SourceRun
from corekit.compress.run import compress_run, compressor_params
from corekit.errors import CorekitError, SpecError
from corekit.rundir import RunDir
from corekit.spec import ModelSpec, load_spec
from corekit_plugins.compressors.prune import (
    activation_importance, calibration_windows, keep_top, magnitude_importance, plan_structured, prune_structured,
    removed_count,
)


def prune(registry, *items: str):
    return compressor_params("prune", list(items), registry)


def block_linears(model) -> dict[str, torch.Tensor]:
    """The prunable weights, written out here rather than taken from the plugin."""
    out = {}
    for i, block in enumerate(model.blocks):
        for name in ("attn.qkv", "attn.out", "mlp.up", "mlp.down"):
            out[f"{i}.{name}"] = block.get_submodule(name).weight.detach()
    return out


def zeroed_reference(model, heads_per_unit: int, head_dim: int, keep_units, keep_neurons):
    """``model`` with the output columns of every unit not kept set to zero: what structured
    pruning must compute exactly."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for block, units, neurons in zip(ref.blocks, keep_units, keep_neurons):
            n_units = block.attn.out.weight.shape[1] // (heads_per_unit * head_dim)
            for u in set(range(n_units)) - set(units):
                block.attn.out.weight[:, u * heads_per_unit * head_dim:(u + 1) * heads_per_unit * head_dim] = 0
            dropped = sorted(set(range(block.mlp.down.weight.shape[1])) - set(neurons))
            block.mlp.down.weight[:, dropped] = 0
    return ref


def source_of(registry, tmp_path, section: dict, **extra) -> SourceRun:
    """A SourceRun for ``check`` only: a spec without weights or data."""
    spec = load_spec({"model": section, "tokenizer": "bytes", **extra}, registry=registry)
    return SourceRun(RunDir(tmp_path / "run"), spec, registry, tokenizer=None)


# --------------------------------------------------------------------------- rounding and params
def test_removed_count_rounds_half_up_and_keeps_one_unit():
    assert [removed_count(s, 4) for s in (0.0, 0.1, 0.125, 0.5, 0.6, 0.99)] == [0, 0, 1, 2, 2, 3]
    assert removed_count(0.5, 3) == 2  # 1.5 rounds up
    assert removed_count(0.9, 2) == 1 and removed_count(0.9, 1) == 0  # at least one unit remains


def test_sparsity_outside_range_is_a_spec_error(registry):
    for bad in ("1.5", "1", "-0.1"):
        with pytest.raises(SpecError, match=r"prune\.sparsity"):
            prune(registry, f"sparsity={bad}")
    with pytest.raises(SpecError, match=r"prune\.heads"):
        prune(registry, "method='structured'", "heads=1.0")


def test_cli_refuses_sparsity_one_and_writes_nothing(capsys, tmp_path):
    out = tmp_path / "pruned"
    code, _, err = run_cli(capsys, "compress", str(tmp_path / "whatever"), "--with", "prune",
                           "--set", "sparsity=1", "--out", str(out))
    assert code == 2 and "prune.sparsity" in err and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- structured, small models
@pytest.mark.parametrize("act", ["gelu", "swiglu"])
@pytest.mark.parametrize("att, keep, heads, kv", [
    (attention("mha"), [[1, 3], [0, 2]], 2, 2),                      # a unit is a head and its own KV head
    (attention("gqa", n_heads=8, n_kv_heads=4), [[1, 3], [2, 3]], 4, 2),  # a unit is a KV group of 2 query heads
    (attention("mqa"), [[0, 3], [1, 2]], 2, 1),                      # a unit is a query head; the KV head stays
])
def test_structured_equals_the_model_with_those_units_zeroed(registry, act, att, keep, heads, kv):
    model = tiny_model(registry, attention=att, mlp={"activation": act, "hidden_dim": 48}, bias=True)
    spec = model.spec
    params = prune(registry, "method='structured'", "heads=0.5", "neurons=0.25")
    plan = plan_structured(spec, params)
    keep_neurons = [[j for j in range(48) if j % 4 != 1], [j for j in range(48) if j % 4 != 2]]
    pruned, new_spec = prune_structured(model, spec, plan, keep, keep_neurons, registry)

    head_dim = 32 // att["n_heads"]
    att_after = new_spec.attention
    assert ((att_after.n_heads, att_after.kv_heads, att_after.head_dim, new_spec.mlp.hidden_dim)
            == (heads, kv, head_dim, 36))
    registry.resolve(ModelSpec).model_validate(new_spec.model_dump())  # the new section validates

    # parameter count by hand: d=32, vocab 64, layernorm with bias, learned positions, 2 layers
    d, hidden, n_kv = 32, 36, kv
    gate = 2 if act == "swiglu" else 1
    per_layer = ((heads + 2 * n_kv) * head_dim * (d + 1) + heads * head_dim * d + d   # qkv and out (biases)
                 + gate * hidden * (d + 1) + hidden * d + d + 2 * 2 * d)              # up, down, two layernorms
    expected = 64 * d + 32 * d + 2 * per_layer + 2 * d  # tied embedding, positions, blocks, final norm
    assert sum(p.numel() for p in pruned.parameters()) == expected

    per_unit = att["n_heads"] // (att.get("n_kv_heads", att["n_heads"]) if att["name"] != "mqa" else att["n_heads"])
    ref = zeroed_reference(model, per_unit, head_dim, keep, keep_neurons)
    ids = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(pruned(ids), ref(ids), atol=1e-5)
        assert not torch.allclose(pruned(ids), model(ids), atol=1e-3)  # something was removed


def test_nothing_removed_keeps_the_model(registry):
    model = tiny_model(registry, attention=attention("gqa"), mlp={"activation": "swiglu"})
    plan = plan_structured(model.spec, prune(registry, "method='structured'", "sparsity=0.0"))
    assert plan.remove_units == 0 and plan.remove_neurons == 0
    full = [list(range(plan.heads.count))] * 2
    pruned, spec = prune_structured(model, model.spec, plan, full, [list(range(plan.hidden_dim))] * 2, registry)
    assert spec.attention == model.spec.attention  # head_dim left unset when no head goes
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        assert torch.equal(pruned(ids), model(ids))


@pytest.mark.parametrize("importance", ["activation", "magnitude"])
def test_importance_ranks_the_silenced_units_last(registry, importance):
    model = tiny_model(registry, attention=attention("gqa", n_heads=8, n_kv_heads=4), mlp={"activation": "swiglu"})
    plan = plan_structured(model.spec, prune(registry, "method='structured'", "heads=0.25", "neurons=0.1"))
    with torch.no_grad():  # in layer 1, KV group 2 (query heads 4, 5) and neuron 7 contribute nothing
        model.blocks[1].attn.out.weight[:, 4 * 4:6 * 4] = 0
        model.blocks[1].mlp.down.weight[:, 7] = 0
        model.blocks[1].attn.out.weight[:, 0:2 * 4] *= 10  # group 0 the loudest
    if importance == "activation":
        batches = [torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(i)) for i in range(2)]
        heads, neurons = activation_importance(model, plan, batches)
    else:
        heads, neurons = magnitude_importance(model, plan)
    assert [len(h) for h in heads] == [4, 4] and [len(n) for n in neurons] == [plan.hidden_dim] * 2
    assert heads[1][2] == 0 and heads[1].argmax() == 0 and neurons[1][7] == 0
    assert keep_top(heads[1], plan.remove_units) == [0, 1, 3]  # kept in their original order
    assert 7 not in keep_top(neurons[1], plan.remove_neurons)
    assert keep_top(torch.tensor([1.0, 1.0, 1.0]), 1) == [0, 1]  # ties keep the earlier unit


# --------------------------------------------------------------------------- refusals (check only)
def test_structured_refuses_a_third_party_attention(tmp_path):
    from typing import Literal

    from torch import nn

    from corekit.params import AttentionParams
    from corekit.plugins import load_registry

    class ToyAttentionParams(AttentionParams):
        name: Literal["toyattn"] = "toyattn"

    class ToyAttention(nn.Module):
        def forward(self, x, batch, cache=None):
            return x

    registry = load_registry(autoload=False)  # a registry of its own: the session one stays clean
    registry.add("attention", ToyAttentionParams, lambda params, ctx, kernel: ToyAttention())
    source = source_of(registry, tmp_path, model_section(attention={"name": "toyattn", "n_heads": 4}))
    with pytest.raises(CorekitError, match="ToyAttention.*method=unstructured"):
        registry.build("compressor", prune(registry, "method='structured'", "importance='magnitude'")).check(source)
    registry.build("compressor", prune(registry)).check(source)  # unstructured prunes any Linear


def test_structured_asks_the_components_not_their_class_names(tmp_path):
    """Structured pruning takes any attention that says where its heads are (head_layout) and any
    feed-forward block that says where its units are (hidden_units), and refuses head removal for
    any positional scheme whose parameters depend on the head count."""
    from typing import ClassVar, Literal

    from torch import nn

    from corekit.modules.attention import HeadLayout
    from corekit.modules.positional import Positional
    from corekit.params import AttentionParams, PositionalParams
    from corekit.plugins import load_registry

    class LaidOutParams(AttentionParams):
        name: Literal["laidout"] = "laidout"

    class LaidOut(nn.Module):  # not the built-in attention class
        def __init__(self, ctx):
            super().__init__()
            self.fused = nn.Linear(ctx.d_model, 3 * ctx.d_model)
            self.proj = nn.Linear(ctx.d_model, ctx.d_model)
            self.layout = HeadLayout(ctx.n_heads, ctx.n_heads, ctx.head_dim, qkv="fused", out="proj")

        def head_layout(self):
            return self.layout

    class PerHeadParams(PositionalParams):
        name: Literal["perhead"] = "perhead"
        depends_on_heads: ClassVar[bool] = True

    registry = load_registry(autoload=False)
    registry.add("attention", LaidOutParams, lambda params, ctx, kernel: LaidOut(ctx))
    registry.add("positional", PerHeadParams, lambda params, ctx: Positional())
    structured = prune(registry, "method='structured'", "importance='magnitude'")
    laid_out = source_of(registry, tmp_path, model_section(attention={"name": "laidout", "n_heads": 4}))
    registry.build("compressor", structured).check(laid_out)  # accepted: it says where its heads are
    per_head = source_of(registry, tmp_path, model_section(position="perhead"))
    with pytest.raises(CorekitError, match="perhead's per-head parameters.*heads=0"):
        registry.build("compressor", structured).check(per_head)


def test_structured_refuses_alibi_head_removal(registry, tmp_path):
    source = source_of(registry, tmp_path, model_section(position="alibi"))
    with pytest.raises(CorekitError, match="alibi.*heads=0"):
        registry.build("compressor", prune(registry, "method='structured'", "importance='magnitude'")).check(source)
    registry.build("compressor",
                   prune(registry, "method='structured'", "importance='magnitude'", "heads=0")).check(source)


def test_refuses_a_quantized_run_and_runs_without_data(registry, tmp_path):
    quantized = source_of(registry, tmp_path, model_section(), changes=[{"compressor": {"name": "quantize"}}])
    with pytest.raises(CorekitError, match="already quantized"):
        registry.build("compressor", prune(registry)).check(quantized)
    source = source_of(registry, tmp_path, model_section())
    with pytest.raises(CorekitError, match="recover_steps=3.*no prepared data"):
        registry.build("compressor", prune(registry, "recover_steps=3")).check(source)
    with pytest.raises(CorekitError, match="importance=magnitude"):
        registry.build("compressor", prune(registry, "method='structured'")).check(source)


# --------------------------------------------------------------------------- the trained run
@pytest.fixture(scope="module")
def dataless_run(trained_run, tmp_path_factory):
    """``trained_run`` without its prepared data."""
    run = tmp_path_factory.mktemp("dataless") / "run"
    run.mkdir()
    for name in ("spec.toml", "tokenizer.json", "model.safetensors"):
        shutil.copy2(trained_run / name, run / name)
    return run


@pytest.mark.slow
def test_a_refused_compression_writes_nothing(registry, dataless_run, tmp_path):
    out = tmp_path / "parent" / "out"
    for items in (["recover_steps=2"], ["method='structured'"]):
        with pytest.raises(CorekitError, match="no prepared data"):
            compress_run(dataless_run, prune(registry, *items), out, registry=registry, measure_speed=False)
        assert not out.exists() and not out.parent.exists()


@pytest.mark.slow
@pytest.mark.parametrize("scope, recover", [("global", 3), ("layer", 0)])
def test_unstructured_half_sparsity_stays_after_recovery(registry, trained_run, tmp_path, scope, recover):
    out = tmp_path / "out"
    params = prune(registry, "sparsity=0.5", f"scope='{scope}'", f"recover_steps={recover}", "recover_lr=1e-3")
    report = compress_run(trained_run, params, out, registry=registry, measure_speed=False)
    spec = load_spec(trained_run / "spec.toml", registry=registry)
    source = load_run_model(spec, trained_run / "model.safetensors", registry)
    new_spec = load_spec(out / "spec.toml", registry=registry)
    assert [c.name for c in new_spec.change_params("compressor")] == ["prune"] and new_spec.model == spec.model
    pruned = load_run_model(new_spec, out / "model.safetensors", registry)

    before, after = block_linears(source), block_linears(pruned)
    n = sum(w.numel() for w in before.values())
    zeros = {k: int((w == 0).sum()) for k, w in after.items()}
    if scope == "global":
        assert sum(zeros.values()) == round(0.5 * n)
        kept = torch.cat([before[k][after[k] != 0].abs() for k in before])
        gone = torch.cat([before[k][after[k] == 0].abs() for k in before])
        assert gone.max() <= kept.min()  # one threshold over all blocks
    else:
        assert zeros == {k: round(0.5 * w.numel()) for k, w in before.items()}
    details = report["details"]
    assert details["zeroed"] == sum(zeros.values()) and details["prunable_weights"] == n
    assert abs(details["sparsity_achieved"] - 0.5) < 1e-3
    assert report["after"]["nonzero_parameters"] < report["before"]["nonzero_parameters"]
    kept_changed = any(not torch.equal(before[k][after[k] != 0], after[k][after[k] != 0]) for k in before)
    assert kept_changed == bool(recover)  # recovery trained the surviving weights (and only then)
    if recover:
        assert details["recover_steps"] == recover and details["recover_lr"] == 1e-3
    if not recover:  # outside the blocks nothing is pruned
        for name in ("tok_emb.weight", "norm.weight", "blocks.0.norm1.weight"):
            assert torch.equal(pruned.state_dict()[name], source.state_dict()[name])


@pytest.mark.slow
def test_structured_prune_of_the_trained_run_is_smaller_and_exports(registry, trained_run, tmp_path):
    from corekit.export.bundle import export_run

    out = tmp_path / "out"
    report = compress_run(trained_run, prune(registry, "method='structured'", "sparsity=0.5", "calibration_batches=2"),
                          out, registry=registry, measure_speed=False)
    spec = load_spec(trained_run / "spec.toml", registry=registry)
    new_spec = load_spec(out / "spec.toml", registry=registry)  # validates
    att = new_spec.model.attention
    # gqa 4 heads / 2 KV heads of width 16 -> one KV group of 2 heads; swiglu 192 -> 96 neurons
    assert (att.n_heads, att.n_kv_heads, att.head_dim, new_spec.model.mlp.hidden_dim) == (2, 1, 16, 96)
    d, layers = 64, 2
    # qkv rows, out cols, up rows, down cols
    removed = layers * ((2 + 1 + 1) * 16 * d + 2 * 16 * d + 2 * 96 * d + 96 * d)
    assert report["after"]["parameters"] == report["before"]["parameters"] - removed
    pruned = load_run_model(new_spec, out / "model.safetensors", registry)
    assert sum(p.numel() for p in pruned.parameters()) == report["after"]["parameters"]
    assert pruned.blocks[0].attn.qkv.weight.shape == (4 * 16, d) and pruned.blocks[1].mlp.up.weight.shape == (192, d)

    # the same result, step by step: it equals the source with the removed units zeroed
    source = SourceRun(RunDir(trained_run), spec, registry, tokenizer=None)
    model = source.load_model()
    plan = plan_structured(spec.model, prune(registry, "method='structured'"))
    heads, neurons = activation_importance(model, plan, calibration_windows(source, 2))
    keep_units = [keep_top(s, plan.remove_units) for s in heads]
    keep_neurons = [keep_top(s, plan.remove_neurons) for s in neurons]
    assert report["details"]["removed_head_units"] == [sorted({0, 1} - set(k)) for k in keep_units]
    again, _ = prune_structured(model, spec.model, plan, keep_units, keep_neurons, registry)
    for name, tensor in pruned.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    ref = zeroed_reference(model, 2, 16, keep_units, keep_neurons)
    ids = torch.randint(0, 256, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(pruned(ids), ref(ids), atol=1e-5)

    export = export_run(out, tmp_path / "bundle", registry=registry)
    assert export.parity["max_abs_logit_diff"] <= 1e-4
    assert export.manifest["cache"] == {"n_layers": 2, "n_kv_heads": 1, "head_dim": 16}


@pytest.mark.slow
def test_structured_magnitude_needs_no_data(registry, dataless_run, tmp_path):
    params = prune(registry, "method='structured'", "importance='magnitude'", "heads=0", "neurons=0.25")
    report = compress_run(dataless_run, params, tmp_path / "out", registry=registry, measure_speed=False)
    new_spec = load_spec(tmp_path / "out" / "spec.toml", registry=registry)
    assert new_spec.model.attention.n_heads == 4 and new_spec.model.mlp.hidden_dim == 144
    assert report["before"]["parameters"] - report["after"]["parameters"] == 2 * 3 * 48 * 64


@pytest.mark.slow
def test_structured_recovery_trains_the_smaller_model(registry, trained_run, tmp_path):
    items = ["method='structured'", "importance='magnitude'", "heads=0.5", "neurons=0.25", "recover_steps=2"]
    report = compress_run(trained_run, prune(registry, *items), tmp_path / "out", registry=registry,
                          measure_speed=False)
    assert report["details"]["recover_steps"] == 2 and report["details"]["recover_lr"] == 5e-3  # the run's lr
    new_spec = load_spec(tmp_path / "out" / "spec.toml", registry=registry)
    recovered = load_run_model(new_spec, tmp_path / "out" / "model.safetensors", registry)

    spec = load_spec(trained_run / "spec.toml", registry=registry)
    model = SourceRun(RunDir(trained_run), spec, registry, tokenizer=None).load_model()
    plan = plan_structured(spec.model, prune(registry, *items))
    heads, neurons = magnitude_importance(model, plan)
    unrecovered, _ = prune_structured(model, spec.model, plan, [keep_top(s, plan.remove_units) for s in heads],
                                      [keep_top(s, plan.remove_neurons) for s in neurons], registry)
    after, before = recovered.state_dict(), unrecovered.state_dict()
    assert after.keys() == before.keys() and all(after[k].shape == before[k].shape for k in after)
    assert not torch.equal(after["blocks.0.mlp.down.weight"], before["blocks.0.mlp.down.weight"])
