"""A run spec's ``changes``: what a run's model is beyond [model], applied in order by the plugin
that made each change (corekit.change, corekit.run)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Literal

import pytest
import torch
from torch import nn

from corekit import hookimpl
from corekit.change import Head, ModelChange
from corekit.errors import CorekitError, SpecError
from corekit.params import HeadParams
from corekit.plugins import load_registry
from corekit.run import Run, build_run_model, plain_spec
from corekit.spec import change_kind, load_spec, spec_to_dict

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"attention": {"n_heads": 2}, "d_model": 8, "n_layers": 1, "context_length": 8, "vocab_size": 260,
         "tie_embeddings": False}


class TaggedParams(HeadParams):
    name: Literal["tagged"] = "tagged"
    tag: str


class Tagged(Head):
    """A third-party head: a two-layer head in lm_head; it records the order it was restored in."""

    drops = ("lm_head.weight",)

    def restore(self, model: nn.Module) -> nn.Module:
        model.tags = [*getattr(model, "tags", []), self.params.tag]
        d = model.tok_emb.embedding_dim
        model.lm_head = nn.Sequential(nn.Linear(d, d), nn.Linear(d, len(self.labels)))
        return model


def _registry():
    module = types.ModuleType("tagged_head_plugin")
    module.corekit_register_components = hookimpl(lambda registry: registry.add("head", TaggedParams, Tagged))
    return load_registry(autoload=False, plugins=[module])


def _tagged(tag: str) -> dict:
    return {"head": {"name": "tagged", "labels": ["no", "yes"], "tag": tag}}


def test_changes_are_restored_in_order_by_the_plugins_that_made_them():
    registry = _registry()
    spec = load_spec({"model": MODEL, "changes": [_tagged("first"), _tagged("second")]}, registry=registry)
    assert [kind for kind, _ in map(change_kind, spec.changes)] == ["head", "head"]
    model = build_run_model(spec, registry)
    assert model.tags == ["first", "second"]
    assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 2)
    assert Run(Path("."), spec, registry).head.tag == "second"
    assert spec_to_dict(spec)["changes"] == [
        {"head": {"name": "tagged", "labels": ["no", "yes"], "pooling": "last", "tag": t}} for t in ("first", "second")
    ]


def test_a_change_drops_the_keys_it_replaced_from_a_base_file(tmp_path):
    """A file holding a plain model's weights (with its untied LM head) and the head's tensors: the
    base LM head's key is skipped, the head's tensors load, the body is the base's."""
    from safetensors.torch import load_file, save_file

    from corekit.assemble import build_model
    from corekit.weights import save_weights

    registry = _registry()
    plain = load_spec({"model": MODEL}, registry=registry)
    torch.manual_seed(0)
    base = build_model(plain, registry)
    save_weights(base, plain, registry, tmp_path / "base.safetensors")
    head = {"lm_head.0.weight": torch.randn(8, 8), "lm_head.0.bias": torch.randn(8),
            "lm_head.1.weight": torch.randn(2, 8), "lm_head.1.bias": torch.randn(2)}
    stored = load_file(str(tmp_path / "base.safetensors"))
    assert "lm_head.weight" in stored
    save_file({**stored, **head}, str(tmp_path / "model.safetensors"))
    spec = load_spec({"model": MODEL, "changes": [_tagged("only")]}, registry=registry)
    model = Run(tmp_path, spec, registry).model().eval()
    state = model.state_dict()
    for key, tensor in head.items():
        assert torch.equal(state[key], tensor)
    # independently: the base model's hidden states through a head built from the head's tensors
    expected_head = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    expected_head.load_state_dict({k.removeprefix("lm_head."): v for k, v in head.items()})
    base.eval().lm_head = nn.Identity()
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), expected_head(base(ids)))
    del Tagged.drops  # without the declaration, the stray key is an error
    try:
        with pytest.raises(CorekitError, match="lm_head.weight"):
            Run(tmp_path, spec, registry).model()
    finally:
        Tagged.drops = ("lm_head.weight",)


def test_only_foldable_changes_leave_the_plain_spec(registry):
    spec = load_spec({"model": MODEL, "changes": [{"head": {"name": "classifier", "labels": ["a", "b"]}},
                                                   {"adapter": {"name": "lora", "rank": 2}}]}, registry=registry)
    assert [kind for kind, _ in map(change_kind, plain_spec(spec, registry).changes)] == ["head"]
    run = Run(Path("."), spec, registry)
    assert not run.is_plain and run.head.labels == ["a", "b"]
    model = run.model(seed=0)
    assert model(torch.tensor([[1, 2]])).shape == (1, 2, 2)  # the classifier head, under LoRA
    assert any("lora" in key for key in model.state_dict())
    lone = load_spec({"model": MODEL, "changes": [{"compressor": {"name": "quantize"}}]}, registry=registry)
    assert plain_spec(lone, registry) is lone and Run(Path("."), lone, registry).is_plain


@pytest.mark.parametrize(("entry", "message"), [
    ({"head": {"name": "classifier", "labels": ["a", "b"]}, "adapter": {"name": "lora"}},
     r"changes\.0: a change names exactly one of compressor, head, adapter; got head, adapter"),
    ({}, r"changes\.0: a change names exactly one of compressor, head, adapter; got none"),
    ({"prune": {"name": "prune"}}, r"changes\.0\.prune: unknown field 'prune'; allowed: compressor, head, adapter"),
    ({"head": {"name": "nope", "labels": ["a"]}}, r"changes\.0\.head\.name: .*nope.*classifier"),
    ({"head": {"name": "classifier", "labels": ["a", "a"]}}, r"changes\.0\.head\.labels: labels must be distinct"),
    ({"compressor": {"name": "quantize", "bits": 3}}, r"changes\.0\.compressor\.bits"),
])
def test_a_bad_change_entry_names_its_field(registry, entry, message):
    with pytest.raises(SpecError, match=message):
        load_spec({"model": MODEL, "changes": [entry]}, registry=registry)


def test_a_spec_written_before_changes_is_read_into_them(registry):
    """Runs compressed or fine-tuned by earlier versions list compressors under `compressed` and
    keep the head and adapter in [finetune] (with `merged`)."""
    old = {
        "model": MODEL,
        "compressed": [{"name": "prune", "sparsity": 0.5}],
        "finetune": {"base": "runs/tiny", "task": "classify", "data": {"train": "x.csv"}, "labels": ["a", "b"],
                     "pooling": "mean", "adapter": {"name": "lora", "rank": 2}, "merged": False},
    }
    spec = load_spec(old, registry=registry)
    assert [(kind, p.name) for kind, p in map(change_kind, spec.changes)] == [
        ("compressor", "prune"), ("head", "classifier"), ("adapter", "lora")]
    assert spec.changes[1].head.pooling == "mean" and spec.changes[2].adapter.rank == 2
    written = spec_to_dict(spec)
    assert "compressed" not in written and "merged" not in written["finetune"]
    assert load_spec(written, registry=registry) == spec  # the new form reads back as it is
    merged = {**old, "compressed": {"name": "quantize"}, "finetune": {**old["finetune"], "merged": True}}
    spec = load_spec(merged, registry=registry)
    assert [kind for kind, _ in map(change_kind, spec.changes)] == ["compressor", "head"]


def test_every_change_kind_product_is_a_model_change(registry):
    from corekit.kinds import CHANGE_KINDS, KINDS

    assert CHANGE_KINDS == ("compressor", "head", "adapter")
    for kind in CHANGE_KINDS:
        assert issubclass(KINDS[kind].product_class(), ModelChange), kind
    assert [c.name for c in registry.components("head")] == ["classifier"]


def test_the_run_opener_knows_no_stage_that_changes_models():
    """corekit/run.py applies changes through their interface only: it imports no later stage and
    names no head, adapter file or task."""
    import ast

    tree = ast.parse((ROOT / "corekit" / "run.py").read_text(encoding="utf-8"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not [m for m in modules if m and m.startswith(("corekit.finetune", "corekit.compress", "corekit.cli"))]
    source = (ROOT / "corekit" / "run.py").read_text(encoding="utf-8")
    for word in ("lm_head", "adapter.safetensors", "spec.finetune", '"classify"', ".task", "merged", "compressed"):
        assert word not in source, word


def test_the_json_schema_describes_changes(registry):
    from corekit.spec import spec_schema

    schema = spec_schema(registry)
    change = schema["$defs"]["Change"]
    assert set(change["properties"]) == {"compressor", "head", "adapter"} and change["additionalProperties"] is False
    assert "corekit finetune" in schema["properties"]["changes"]["description"]
    head = str(change["properties"]["head"])
    assert "classifier" in head and "replaces the LM head" in head
