"""Run specs in-process: loading, defaults, component params, overrides, schema and errors."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Literal

import pytest
from pydantic import PositiveInt

import corekit
from corekit.errors import SpecError
from corekit.params import Params
from corekit.plugins import load_registry
from corekit.spec import load_spec, spec_schema, spec_to_dict
from helpers import model_section

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BYTES_VOCAB = 257  # 256 byte values + <|endoftext|>


def spec(**model) -> dict:
    """A whole run spec (as a dict) with a small [model]; keyword arguments replace its fields."""
    return {"model": model_section(**model)}


def issues_of(exc: SpecError) -> dict[str, str]:
    return {issue.path: issue.message for issue in exc.issues}


def load_error(registry, source, overrides=()) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(source, overrides, registry=registry)
    return info.value


# --------------------------------------------------------------------------- examples
@pytest.mark.parametrize("name", ["tiny", "llama-style", "gpt2-small"])
def test_examples_load(registry, name):
    run = load_spec(EXAMPLES / f"{name}.toml", registry=registry)
    m = run.model
    assert m.vocab_size is not None and m.vocab_size >= BYTES_VOCAB
    assert m.mlp.hidden_dim is not None
    assert m.attention.kernel.name == "flash"
    assert m.d_model % m.attention.n_heads == 0


def test_tiny_defaults_filled(registry):
    m = load_spec(EXAMPLES / "tiny.toml", registry=registry).model
    assert m.vocab_size == BYTES_VOCAB  # from the bytes tokenizer
    assert m.mlp.activation.name == "swiglu"
    assert m.mlp.hidden_dim == 64 * math.ceil(8 * 128 / 3 / 64) == 384
    assert m.norm.name == "rmsnorm" and m.norm.eps == 1e-6  # plugin default
    assert m.position.name == "rope" and m.position.theta == 10000.0
    assert m.attention.name == "gqa" and m.attention.kv_heads == 2
    assert m.init_std == 0.02


def test_llama_and_gpt2_values(registry):
    llama = load_spec(EXAMPLES / "llama-style.toml", registry=registry)
    assert llama.model.mlp.hidden_dim == 1376  # given, not the default
    assert llama.model.tie_embeddings is False
    assert llama.model.vocab_size == BYTES_VOCAB
    gpt2 = load_spec(EXAMPLES / "gpt2-small.toml", registry=registry)
    assert gpt2.model.vocab_size == 50257
    assert gpt2.model.mlp.activation.name == "gelu" and gpt2.model.mlp.activation.approximate == "tanh"
    assert gpt2.model.mlp.hidden_dim == 3072
    assert gpt2.model.norm.name == "layernorm"


def test_minimal_spec_defaults(registry):
    run = load_spec({"model": {"attention": {"n_heads": 4}}}, registry=registry)
    m = run.model
    assert m.d_model == 256 and m.n_layers == 4 and m.context_length == 256
    assert m.vocab_size == BYTES_VOCAB
    assert m.attention.name == "mha"  # a table without name means mha
    assert m.attention.kernel.name == "flash"
    assert m.norm.name == "layernorm"
    assert m.position.name == "learned"
    assert m.mlp.activation.name == "gelu"
    assert m.mlp.hidden_dim == 4 * 256
    assert run.tokenizer.name == "bytes"
    assert run.train.optimizer.name == "adamw" and run.train.scheduler.name == "cosine"


@pytest.mark.parametrize(
    ("activation", "d_model", "expected"),
    [
        ("gelu", 128, 512),
        ("relu", 96, 384),
        ("swiglu", 128, 384),
        ("swiglu", 512, 1408),
        ("geglu", 200, 576),
    ],
)
def test_hidden_dim_default(registry, activation, d_model, expected):
    gated = activation in ("swiglu", "geglu")
    formula = 64 * math.ceil(8 * d_model / 3 / 64) if gated else 4 * d_model
    assert formula == expected
    m = load_spec(spec(d_model=d_model, mlp={"activation": activation}), registry=registry).model
    assert m.mlp.hidden_dim == expected


# --------------------------------------------------------------------------- components
def test_shorthand_equals_table(registry):
    short = load_spec(spec(norm="rmsnorm", position="rope", mlp={"activation": "swiglu"}), registry=registry)
    table = load_spec(
        spec(norm={"name": "rmsnorm"}, position={"name": "rope"}, mlp={"activation": {"name": "swiglu"}}),
        registry=registry,
    )
    assert short == table
    assert spec_to_dict(short) == spec_to_dict(table)


def test_attention_table_without_name_is_mha(registry):
    nameless = load_spec(spec(attention={"n_heads": 4}), registry=registry)
    named = load_spec(spec(attention={"name": "mha", "n_heads": 4}), registry=registry)
    assert nameless.model.attention.name == "mha"
    assert nameless == named


def test_kernel_shorthand_and_table(registry):
    a = load_spec(spec(attention={"n_heads": 4, "kernel": "math"}), registry=registry)
    b = load_spec(spec(attention={"n_heads": 4, "kernel": {"name": "math"}}), registry=registry)
    assert a.model.attention.kernel.name == "math"
    assert a == b


def test_lax_coercion(registry):
    m = load_spec(spec(d_model="128", n_layers=3.0, tie_embeddings="false"), registry=registry).model
    assert m.d_model == 128 and isinstance(m.d_model, int)
    assert m.n_layers == 3 and isinstance(m.n_layers, int)
    assert m.tie_embeddings is False
    assert m.mlp.hidden_dim == 512


def test_component_params_use_plugin_model(registry):
    run = load_spec(
        spec(attention={"name": "gqa", "n_heads": 4, "n_kv_heads": 2}, norm={"name": "rmsnorm", "eps": 1e-3}),
        registry=registry,
    )
    assert type(run.model.attention).__name__ == "GQAParams"
    assert isinstance(run.model.attention, corekit.AttentionParams)
    assert run.model.attention.kv_heads == 2
    assert run.model.norm.eps == 1e-3


def test_gqa_requires_n_kv_heads(registry):
    exc = load_error(registry, spec(attention={"name": "gqa", "n_heads": 4}))
    assert list(issues_of(exc)) == ["model.attention.n_kv_heads"]
    assert "missing" in exc.issues[0].message


@pytest.mark.parametrize("theta", [0, -1.0])
def test_rope_theta_positive(registry, theta):
    exc = load_error(registry, spec(position={"name": "rope", "theta": theta}))
    issues = issues_of(exc)
    assert list(issues) == ["model.position.theta"]
    assert "greater than 0" in issues["model.position.theta"]
    assert repr(theta) in issues["model.position.theta"]


def test_unknown_field_on_rmsnorm(registry):
    exc = load_error(registry, spec(norm={"name": "rmsnorm", "eps": 1e-5, "bias": True}))
    issues = issues_of(exc)
    assert list(issues) == ["model.norm.bias"]  # layernorm has bias, rmsnorm does not
    assert "unknown field 'bias'" in issues["model.norm.bias"]
    assert "eps" in issues["model.norm.bias"]  # lists the allowed fields


def test_mha_rejects_n_kv_heads(registry):
    exc = load_error(registry, spec(attention={"n_heads": 4, "n_kv_heads": 2}))
    assert list(issues_of(exc)) == ["model.attention.n_kv_heads"]


def test_unknown_component_name(registry):
    exc = load_error(registry, spec(attention={"name": "gqb", "n_heads": 4}))
    msg = issues_of(exc)["model.attention.name"]
    assert "mha, gqa, mqa" in msg
    assert "did you mean 'gqa'" in msg


def test_component_of_wrong_kind(registry):
    exc = load_error(registry, spec(norm="rope"))
    msg = issues_of(exc)["model.norm.name"]
    assert "unknown norm 'rope'" in msg
    assert "layernorm" in msg and "rmsnorm" in msg


# --------------------------------------------------------------------------- files
def test_json_spec_equals_toml(registry, tmp_path):
    source = EXAMPLES / "llama-style.toml"
    data = tomllib.loads(source.read_text(encoding="utf-8"))
    json_file = tmp_path / "llama-style.json"
    json_file.write_text(json.dumps(data), encoding="utf-8")
    assert load_spec(json_file, registry=registry) == load_spec(source, registry=registry)


def test_dict_spec_equals_toml(registry):
    source = EXAMPLES / "tiny.toml"
    data = tomllib.loads(source.read_text(encoding="utf-8"))
    assert load_spec(data, registry=registry) == load_spec(source, registry=registry)


def test_spec_error_names_file(registry, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[model]\nd_model = 0\n[model.attention]\nn_heads = 4\n", encoding="utf-8")
    exc = load_error(registry, path)
    assert exc.source == str(path)
    assert str(path) in str(exc)
    assert "model.d_model" in str(exc)


def test_toml_date_is_a_spec_error(registry, tmp_path):
    """A TOML date where a number belongs is a wrong type, not a crash."""
    path = tmp_path / "date.toml"
    path.write_text("[model]\nd_model = 2024-01-01\n[model.attention]\nn_heads = 4\n", encoding="utf-8")
    exc = load_error(registry, path)
    assert list(issues_of(exc)) == ["model.d_model"]


# --------------------------------------------------------------------------- overrides
def test_overrides(registry):
    base = load_spec(EXAMPLES / "tiny.toml", registry=registry)
    assert base.model.position.name == "rope"
    run = load_spec(
        EXAMPLES / "tiny.toml",
        ["model.d_model=512", "model.norm.eps=1e-3", "model.position=alibi"],
        registry=registry,
    )
    assert run.model.d_model == 512
    assert run.model.norm.name == "rmsnorm" and run.model.norm.eps == 1e-3
    assert run.model.position.name == "alibi"
    assert run.model.mlp.hidden_dim == 64 * math.ceil(8 * 512 / 3 / 64)  # default recomputed


def test_override_inside_shorthand_component(registry):
    data = spec(norm="rmsnorm", mlp={"activation": "gelu"})
    run = load_spec(data, ["model.norm.eps=1e-3", "model.mlp.activation.approximate=tanh"], registry=registry)
    assert run.model.norm.name == "rmsnorm" and run.model.norm.eps == 1e-3
    assert run.model.mlp.activation.name == "gelu" and run.model.mlp.activation.approximate == "tanh"
    assert data["model"]["norm"] == "rmsnorm"  # the caller's dict is left alone


def test_override_creates_missing_tables(registry):
    run = load_spec(
        {"model": {"attention": {"n_heads": 4}}},
        ["model.attention.name=gqa", "model.attention.n_kv_heads=2", "train.optimizer.name=adamw",
         "data.paths=['a.txt']"],
        registry=registry,
    )
    assert run.model.attention.name == "gqa" and run.model.attention.kv_heads == 2
    assert run.data.paths == ["a.txt"]


def test_override_value_is_validated(registry):
    exc = load_error(registry, EXAMPLES / "tiny.toml", ["model.d_model=-5"])
    assert list(issues_of(exc)) == ["model.d_model"]


@pytest.mark.parametrize("bad", ["model.d_model", "=3", "model..d_model=3"])
def test_malformed_override(registry, bad):
    exc = load_error(registry, EXAMPLES / "tiny.toml", [bad])
    assert [i.path for i in exc.issues] == ["--set"]
    assert "--set" in str(exc)
    assert repr(bad) in str(exc)


# --------------------------------------------------------------------------- schema
SLOT_KINDS = {"attention": "attention", "norm": "norm", "position": "positional"}


def _slot_names(prop: dict) -> tuple[set[str], set[str]]:
    """(shorthand names, discriminator names) of a ``Slot`` property in the JSON Schema."""
    shorthand: set[str] = set()
    tagged: set[str] = set()
    for member in prop.get("anyOf", []):
        if "enum" in member:
            shorthand |= set(member["enum"])
        if "discriminator" in member:
            tagged |= set(member["discriminator"]["mapping"])
    return shorthand, tagged


def _component_slots(schema: dict) -> dict[str, dict]:
    model = schema["$defs"]["ModelSpec"]["properties"]
    slots = {kind: model[field] for field, kind in SLOT_KINDS.items()}
    slots["activation"] = schema["$defs"]["MLPParams"]["properties"]["activation"]
    return slots


def test_schema_lists_components(registry):
    schema = spec_schema(registry)
    json.dumps(schema)  # plain JSON
    assert schema["properties"]["model"]
    assert "model" in schema["required"]
    for kind, prop in _component_slots(schema).items():
        shorthand, tagged = _slot_names(prop)
        expected = set(registry.names(kind))
        assert len(expected) >= 2, kind
        assert shorthand == expected, kind
        assert tagged == expected, kind


def test_schema_has_plugin_params(registry):
    defs = spec_schema(registry)["$defs"]
    props = {name: set(d.get("properties", {})) for name, d in defs.items()}
    assert "n_kv_heads" in props["GQAParams"]
    assert "n_kv_heads" in defs["GQAParams"]["required"]
    assert "theta" in props["RoPEParams"]
    assert defs["RoPEParams"]["properties"]["theta"]["exclusiveMinimum"] == 0
    assert "eps" in props["RMSNormParams"]
    assert "approximate" in props["GELUParams"]


class TestNormParams(Params):
    """A norm registered at runtime by a test plugin."""

    __test__ = False
    name: Literal["testnorm"] = "testnorm"
    alpha: float = 1.0
    groups: PositiveInt = 1


class _TestNormPlugin:
    @corekit.hookimpl
    def corekit_register_components(self, registry):
        registry.add("norm", TestNormParams, lambda params, ctx: None)


@pytest.fixture(scope="module")
def plugin_registry():
    return load_registry(autoload=False, plugins=[_TestNormPlugin()])


def test_runtime_plugin_in_schema(plugin_registry):
    assert "testnorm" in plugin_registry.names("norm")
    schema = spec_schema(plugin_registry)
    shorthand, tagged = _slot_names(_component_slots(schema)["norm"])
    assert {"layernorm", "rmsnorm", "testnorm"} <= shorthand
    assert {"layernorm", "rmsnorm", "testnorm"} <= tagged
    test_def = next(d for d in schema["$defs"].values()
                    if d.get("properties", {}).get("name", {}).get("const") == "testnorm")
    assert test_def["properties"]["alpha"]["type"] == "number"


def test_runtime_plugin_validates(plugin_registry, registry):
    run = load_spec(spec(norm={"name": "testnorm", "alpha": "0.5"}), registry=plugin_registry)
    assert isinstance(run.model.norm, TestNormParams)
    assert run.model.norm.alpha == 0.5
    assert load_spec(spec(norm="testnorm"), registry=plugin_registry).model.norm.alpha == 1.0
    # the shared built-in registry does not know it
    exc = load_error(registry, spec(norm="testnorm"))
    assert "unknown norm 'testnorm'" in issues_of(exc)["model.norm.name"]


def test_runtime_plugin_errors_name_field(plugin_registry):
    exc = load_error(plugin_registry, spec(norm={"name": "testnorm", "alpha": "lots", "groups": 0, "beta": 1}))
    issues = issues_of(exc)
    assert set(issues) == {"model.norm.alpha", "model.norm.groups", "model.norm.beta"}
    assert "'lots'" in issues["model.norm.alpha"]
    assert "alpha" in issues["model.norm.beta"]  # allowed fields listed
    exc = load_error(plugin_registry, spec(norm="testnrm"))
    assert "did you mean 'testnorm'" in issues_of(exc)["model.norm.name"]


# --------------------------------------------------------------------------- cross-field rules
def test_d_model_divisible_by_n_heads(registry):
    exc = load_error(registry, spec(d_model=100, attention={"n_heads": 8}))
    issues = issues_of(exc)
    assert list(issues) == ["model.attention.n_heads"]
    assert "n_heads=8" in issues["model.attention.n_heads"]
    assert "d_model=100" in issues["model.attention.n_heads"]


def test_n_heads_divisible_by_n_kv_heads(registry):
    exc = load_error(registry, spec(attention={"name": "gqa", "n_heads": 8, "n_kv_heads": 3}))
    issues = issues_of(exc)
    assert list(issues) == ["model.attention.n_kv_heads"]
    assert "n_kv_heads=3" in issues["model.attention.n_kv_heads"]
    assert "n_heads=8" in issues["model.attention.n_kv_heads"]


def test_rope_needs_even_head_dim(registry):
    exc = load_error(registry, spec(d_model=120, attention={"n_heads": 8}, position="rope"))
    issues = issues_of(exc)
    assert list(issues) == ["model.position.name"]
    assert "head_dim=15" in issues["model.position.name"]
    assert "d_model=120" in issues["model.position.name"]
    # the same shape is fine without rope
    load_spec(spec(d_model=120, attention={"n_heads": 8}, position="alibi"), registry=registry)


def test_vocab_smaller_than_tokenizer(registry):
    exc = load_error(registry, spec(vocab_size=100))
    issues = issues_of(exc)
    assert list(issues) == ["model.vocab_size"]
    assert "vocab_size=100" in issues["model.vocab_size"]
    assert str(BYTES_VOCAB) in issues["model.vocab_size"]


def test_vocab_counts_special_tokens(registry):
    data = spec(vocab_size=BYTES_VOCAB)
    assert load_spec(data, registry=registry).model.vocab_size == BYTES_VOCAB
    data["tokenizer"] = {"name": "bytes", "special_tokens": ["<a>", "<b>"]}
    exc = load_error(registry, data)
    assert "258" in issues_of(exc)["model.vocab_size"]


# --------------------------------------------------------------------------- all errors at once
def test_all_errors_reported_at_once(registry):
    data = spec(dropout=1.5, layout="sideways", norm={"name": "rmsnorm", "eps": 1e-5, "shift": 1})
    exc = load_error(registry, data)
    assert set(issues_of(exc)) == {"model.dropout", "model.layout", "model.norm.shift"}
    assert "3 errors" in str(exc)


def test_errors_across_sections(registry):
    data = spec(n_layers=0)
    data["tokenizer"] = "sentencepiece"
    data["train"] = {"batch_size": -1}
    data["extra"] = {}
    exc = load_error(registry, data)
    assert set(issues_of(exc)) == {"model.n_layers", "tokenizer.name", "train.batch_size", "extra"}


# --------------------------------------------------------------------------- review regressions
def test_schema_accepts_what_the_loader_accepts(registry):
    """Example specs and the documented shorthands validate against the JSON Schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(spec_schema(registry))
    for name in ("tiny", "llama-style", "gpt2-small"):
        data = tomllib.loads((EXAMPLES / f"{name}.toml").read_text())
        load_spec(data, registry=registry)
        validator.validate(data)
    shorthand = {"model": {"attention": {"n_heads": 4}, "norm": {"eps": 1e-5}, "position": "rope",
                           "mlp": {"activation": {"name": "gelu", "approximate": "tanh"}}}}
    load_spec(shorthand, registry=registry)
    validator.validate(shorthand)
    bad = {"model": {"attention": {"name": "gqaa", "n_heads": 4}}}
    assert not validator.is_valid(bad)


@pytest.mark.parametrize("tokens,needle", [(["<|a|>", "<|a|>"], "distinct"), ([""], "non-empty")])
def test_special_tokens_distinct_and_non_empty(registry, tokens, needle):
    data = spec()
    data["tokenizer"] = {"name": "bytes", "special_tokens": tokens}
    exc = load_error(registry, data)
    assert needle in issues_of(exc)["tokenizer.special_tokens"]


def test_non_finite_floats_are_rejected(registry):
    exc = load_error(registry, spec(position={"name": "rope", "theta": float("inf")}, dropout=float("nan")))
    assert set(issues_of(exc)) == {"model.position.theta", "model.dropout"}


def test_utf8_bom_is_accepted(registry, tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b"[model]\n[model.attention]\nn_heads = 4\n")
    assert load_spec(path, registry=registry).model.attention.n_heads == 4
