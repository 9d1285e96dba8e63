"""The kinds table (corekit.kinds) is the contract: every built-in component honours it, and
the registry, the hook docs, `corekit plugins --kinds` and the JSON Schema read from it."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from corekit.hookspecs import corekit_register_components
from corekit.kinds import KINDS
from corekit.params import ModelContext

CTX = ModelContext(d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, context_length=8, vocab_size=300, bias=False,
                   dropout=0.0, layout="pre")


def _params(registry, comp):
    fields = {"name": comp.name}
    if comp.kind == "attention":
        fields.update(n_heads=4, **({"n_kv_heads": 2} if "n_kv_heads" in comp.params.model_fields else {}))
    if comp.kind == "head":
        fields.update(labels=["no", "yes"])
    return registry.resolve(comp.params).model_validate(fields)  # nested slots get their defaults


def _build(registry, comp):
    """Build ``comp`` exactly as its kind's ``build`` column says corekit calls it."""
    params = _params(registry, comp)
    call = KINDS[comp.kind].build
    if call == "build(params)":
        return registry.build(comp.kind, params)
    if call == "build(params, ctx)":
        return registry.build(comp.kind, params, CTX)
    if call == "build(params, ctx, kernel)":
        return registry.build(comp.kind, params, CTX, registry.build("attention_kernel", params.kernel, CTX))
    if call == "build(params, ctx, activation)":
        params = params.complete(CTX)
        return registry.build(comp.kind, params, CTX, registry.build("activation", params.activation, CTX))
    if call == "build(params, model)":
        return registry.build(comp.kind, params, nn.Linear(4, 4))
    if call == "build(params, optimizer, max_steps)":
        optimizer = torch.optim.SGD(nn.Linear(4, 4).parameters(), lr=0.1)
        return registry.build(comp.kind, params, optimizer, 10)
    raise AssertionError(f"the test does not know how to call {call}")


def test_every_builtin_component_honours_its_kind(registry):
    kinds_seen = set()
    for comp in registry.components():
        kind = KINDS[comp.kind]
        assert issubclass(comp.params, kind.params), (comp.kind, comp.name)
        product = _build(registry, comp)
        assert isinstance(product, kind.product_class()), (comp.kind, comp.name, type(product))
        kinds_seen.add(comp.kind)
    assert kinds_seen == set(KINDS)  # every kind has a built-in component


def test_model_parts_run_with_the_shapes_the_table_promises(registry):
    x = torch.randn(2, 5, CTX.d_model)
    for name in registry.names("feedforward"):
        ff = _build(registry, registry.get("feedforward", name))
        assert ff(x).shape == x.shape
        units = ff.hidden_units()
        assert ff.get_submodule(units.down).in_features == units.hidden_dim
    for name in registry.names("norm"):
        assert _build(registry, registry.get("norm", name))(x).shape == x.shape


def test_the_registry_refuses_params_outside_the_kinds_base(registry):
    from typing import Literal

    from corekit.errors import PluginError
    from corekit.params import Params
    from corekit.registry import Registry

    class Plain(Params):
        name: Literal["plain"] = "plain"

    with pytest.raises(PluginError, match=r"must subclass corekit.params.OptimizerParams.*build\(params, model\)"):
        Registry().add("optimizer", Plain, lambda params, model: None)


def test_hook_docs_and_cli_read_the_table(capsys):
    from helpers import run_cli

    doc = corekit_register_components.__doc__
    for kind in KINDS.values():
        assert f"``{kind.name}``" in doc and kind.build in doc
    code, out, _ = run_cli(capsys, "plugins", "--kinds", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["kind"] for r in rows] == list(KINDS)
    assert {r["kind"]: r["build"] for r in rows} == {k: v.build for k, v in KINDS.items()}


def test_the_json_schema_describes_slots_with_the_kinds_contract(registry):
    from corekit.spec import spec_schema

    text = json.dumps(spec_schema(registry))
    for kind in ("attention", "norm", "feedforward", "positional", "optimizer", "scheduler", "tokenizer"):
        assert re.search(rf"\ban? {kind} component: {re.escape(KINDS[kind].contract)}", text), kind


def test_the_plugin_guide_documents_every_kinds_build_call():
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text(encoding="utf-8")
    for kind in KINDS.values():
        assert f"`{kind.name}`" in guide, kind.name
        assert kind.build in guide, (kind.name, kind.build)
