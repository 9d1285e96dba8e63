"""Model assembly: sizes, layouts, weight tying, and parity with HF transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from corekit.assemble import build_model
from corekit.errors import CorekitError
from corekit.spec import load_spec
from corekit.stats import count_parameters, flops_per_token
from helpers import attention, tiny_model, tiny_spec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_gpt2_small_has_124_439_808_parameters(registry):
    spec = load_spec(EXAMPLES / "gpt2-small.toml", registry=registry)
    with torch.device("meta"):
        model = build_model(spec, registry)
    assert count_parameters(model) == 124_439_808


def test_gpt2_small_flops_closed_formula(registry):
    spec = load_spec(EXAMPLES / "gpt2-small.toml", registry=registry)
    with torch.device("meta"):
        model = build_model(spec, registry)
    d, L, V, T = 768, 12, 50257, 1024
    per_layer = d * 3 * d + d * d + d * 4 * d + 4 * d * d  # qkv, out, up, down
    assert flops_per_token(model, spec.model) == 2 * (L * per_layer + d * V) + 4 * L * T * d


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"attention": attention("gqa", "math"), "mlp": {"activation": "swiglu"}, "position": "rope"},
        {"attention": attention("mqa", "math"), "layout": "parallel", "bias": True},
    ],
)
def test_flops_per_token_matches_torch_flop_counter(registry, overrides):
    """Our count equals what torch's FlopCounterMode measures on a real forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    overrides.setdefault("attention", attention("mha", "math"))
    model = tiny_model(registry, **overrides)
    T = model.context_length
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randint(0, 64, (1, T)))
    assert counter.get_total_flops() == flops_per_token(model, model.spec) * T


def _expected_params(d, L, V, ctx, hidden, *, bias, tied, layout, kv_heads=4, gated=False, norm_params=None):
    head = d // 4
    attn = d * (d + 2 * kv_heads * head) + d * d + (bias * (d + 2 * kv_heads * head + d))
    mlp = d * hidden * (2 if gated else 1) + hidden * d + bias * (hidden * (2 if gated else 1) + d)
    norm = norm_params if norm_params is not None else (2 * d if bias else d)
    norms = {"pre": 2, "post": 2, "parallel": 1}[layout]
    final = 0 if layout == "post" else norm
    return V * d + (0 if tied else V * d) + ctx * d + L * (attn + mlp + norms * norm) + final


@pytest.mark.parametrize("layout", ["pre", "post", "parallel"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tied", [True, False])
def test_parameter_count_formula(registry, layout, bias, tied):
    model = tiny_model(registry, layout=layout, bias=bias, tie_embeddings=tied)
    assert count_parameters(model) == _expected_params(32, 2, 64, 32, 128, bias=bias, tied=tied, layout=layout)
    assert (model.lm_head.weight is model.tok_emb.weight) is tied


def test_gqa_swiglu_parameter_count(registry):
    model = tiny_model(
        registry, attention=attention("gqa"), mlp={"activation": "swiglu", "hidden_dim": 48}, norm="rmsnorm",
        position="rope",
    )
    expected = _expected_params(32, 2, 64, 0, 48, bias=False, tied=True, layout="pre", kv_heads=2, gated=True,
                                norm_params=32)
    assert count_parameters(model) == expected


@pytest.mark.parametrize("layout", ["pre", "post", "parallel"])
def test_block_layout_matches_hand_written_forward(registry, layout):
    model = tiny_model(registry, n_layers=1, layout=layout)
    block = model.blocks[0]
    ids = torch.randint(0, 64, (2, 9))
    x = model.tok_emb(ids) + model.positional.embed(torch.arange(9).expand(2, 9))

    def attn(h):
        from corekit.modules.attention import AttnBatch

        return block.attn(h, AttnBatch(model.positional, torch.arange(9).expand(2, 9), 0, None))

    if layout == "pre":
        x = x + attn(block.norm1(x))
        x = x + block.mlp(block.norm2(x))
    elif layout == "post":
        x = block.norm1(x + attn(x))
        x = block.norm2(x + block.mlp(x))
    else:
        h = block.norm1(x)
        x = x + attn(h) + block.mlp(h)
    expected = model.lm_head(model.norm(x))
    assert isinstance(model.norm, nn.Identity) == (layout == "post")
    torch.testing.assert_close(model(ids), expected, atol=1e-6, rtol=0)


def test_residual_dropout_only_in_training(registry):
    model = tiny_model(registry, dropout=0.3)
    ids = torch.randint(0, 64, (2, 8))
    torch.testing.assert_close(model(ids), model(ids))
    model.train()
    assert not torch.allclose(model(ids), model(ids))


def test_gpt2_residual_projections_use_scaled_init(registry):
    model = tiny_model(registry, n_layers=8, d_model=256, mlp={"activation": "gelu"},
                       attention={"name": "mha", "n_heads": 4})
    std_out = model.blocks[0].attn.out.weight.std().item()
    std_qkv = model.blocks[0].attn.qkv.weight.std().item()
    assert std_qkv == pytest.approx(0.02, rel=0.05)
    assert std_out == pytest.approx(0.02 / 4, rel=0.1)  # 1/sqrt(2 * 8 layers)


def test_missing_vocab_size_is_a_clear_error(registry):
    spec = tiny_spec(registry, vocab_size=None)
    with pytest.raises(CorekitError, match="vocab_size"):
        build_model(spec, registry)


# --------------------------------------------------------------------------- HF parity
import transformers  # noqa: E402  (a dev dependency: the reference for parity tests)


def test_matches_hf_gpt2(registry):
    cfg = transformers.GPT2Config(
        vocab_size=96, n_positions=32, n_embd=64, n_layer=2, n_head=4, activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    spec = tiny_spec(
        registry, vocab_size=96, d_model=64, context_length=32, bias=True, tie_embeddings=True,
        attention=attention("mha"), mlp={"activation": {"name": "gelu", "approximate": "tanh"}},
    )
    ours = build_model(spec, registry).eval()
    sd = hf.state_dict()
    mapped = {"tok_emb.weight": sd["transformer.wte.weight"], "positional.table.weight": sd["transformer.wpe.weight"],
              "norm.weight": sd["transformer.ln_f.weight"], "norm.bias": sd["transformer.ln_f.bias"],
              "lm_head.weight": sd["transformer.wte.weight"]}
    for i in range(2):
        h = f"transformer.h.{i}."
        for ours_name, hf_name, conv in [
            ("attn.qkv", "attn.c_attn", True), ("attn.out", "attn.c_proj", True),
            ("mlp.up", "mlp.c_fc", True), ("mlp.down", "mlp.c_proj", True),
            ("norm1", "ln_1", False), ("norm2", "ln_2", False),
        ]:
            w = sd[h + hf_name + ".weight"]
            mapped[f"blocks.{i}.{ours_name}.weight"] = w.T if conv else w  # HF Conv1D stores (in, out)
            mapped[f"blocks.{i}.{ours_name}.bias"] = sd[h + hf_name + ".bias"]
    ours.load_state_dict(mapped)
    assert count_parameters(ours) == sum(p.numel() for p in hf.parameters())
    ids = torch.randint(0, 96, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", ["math", "flash"])
def test_matches_hf_llama(registry, kernel):
    cfg = transformers.LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    spec = tiny_spec(
        registry, vocab_size=96, d_model=64, context_length=64, bias=False, tie_embeddings=False,
        attention=attention("gqa", kernel, n_kv_heads=2), norm={"name": "rmsnorm", "eps": 1e-6},
        mlp={"activation": "swiglu", "hidden_dim": 80}, position={"name": "rope", "theta": 10000.0},
    )
    ours = build_model(spec, registry).eval()
    sd = hf.state_dict()
    mapped = {"tok_emb.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"],
              "lm_head.weight": sd["lm_head.weight"]}
    for i in range(2):
        h = f"model.layers.{i}."
        mapped[f"blocks.{i}.attn.qkv.weight"] = torch.cat(
            [sd[h + f"self_attn.{p}_proj.weight"] for p in "qkv"])
        mapped[f"blocks.{i}.attn.out.weight"] = sd[h + "self_attn.o_proj.weight"]
        mapped[f"blocks.{i}.mlp.up.weight"] = torch.cat([sd[h + "mlp.gate_proj.weight"], sd[h + "mlp.up_proj.weight"]])
        mapped[f"blocks.{i}.mlp.down.weight"] = sd[h + "mlp.down_proj.weight"]
        mapped[f"blocks.{i}.norm1.weight"] = sd[h + "input_layernorm.weight"]
        mapped[f"blocks.{i}.norm2.weight"] = sd[h + "post_attention_layernorm.weight"]
    ours.load_state_dict(mapped)
    assert count_parameters(ours) == sum(p.numel() for p in hf.parameters())
    ids = torch.randint(0, 96, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)
