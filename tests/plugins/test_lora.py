"""The ``lora`` adapter: identity at init, frozen base, merge parity, disabling, dropout,
targets and their errors, adapter size, and state-dict keys."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from corekit_plugins.adapters.lora import LoRALinear
from helpers import tiny_model
from torch import nn

from corekit.errors import CorekitError

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
IDS = torch.tensor([[1, 5, 7, 2, 9, 33, 4, 60], [3, 3, 0, 12, 40, 8, 1, 2]])
ATTN = ["blocks.0.attn.out", "blocks.0.attn.qkv", "blocks.1.attn.out", "blocks.1.attn.qkv"]


def lora(registry, **fields):
    return registry.build("adapter", registry.get("adapter", "lora").params(**fields))


def randomize_b(model, seed: int = 1) -> None:
    """Give every ``lora_B`` a non-zero value, so that the adapter changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.copy_(0.1 * torch.randn(module.lora_B.shape, generator=gen))


def adapted(registry, seed: int = 0, **fields):
    model = tiny_model(registry, seed=seed)
    adapter = lora(registry, **fields)
    names = adapter.apply(model)
    return model, adapter, names


def test_at_init_the_adapted_model_computes_the_base_function(registry):
    model = tiny_model(registry)
    weights = {n: model.get_submodule(n).weight for n in ATTN}
    with torch.no_grad():
        before = model(IDS)
    names = lora(registry, rank=8).apply(model)
    assert names == ATTN
    assert all(isinstance(model.get_submodule(n), LoRALinear) for n in names)
    assert all(model.get_submodule(n).weight is w for n, w in weights.items())  # shared, not copied
    with torch.no_grad():
        after = model(IDS)
    assert torch.equal(after, before)


def test_only_the_adapter_trains_and_the_base_weights_stay_bit_identical(registry):
    model, adapter, names = adapted(registry)
    lora_keys = {f"{n}.{p}" for n in names for p in ("lora_A", "lora_B")}
    assert {k for k, p in model.named_parameters() if p.requires_grad} == lora_keys

    randomize_b(model)
    base = {k: v.clone() for k, v in model.state_dict().items() if k not in lora_keys}
    lora_before = {k: v.clone() for k, v in adapter.state(model).items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    loss = F.cross_entropy(model(IDS[:, :-1]).flatten(0, 1), IDS[:, 1:].flatten())
    loss.backward()
    for key, param in model.named_parameters():
        if key in lora_keys:
            assert param.grad is not None and param.grad.abs().sum() > 0, key
        else:
            assert param.grad is None, key
    opt.step()
    after = model.state_dict()
    for key, value in base.items():
        assert torch.equal(after[key], value), key
    assert all(not torch.equal(after[k], v) for k, v in lora_before.items())  # the adapter did move


def test_merge_folds_the_update_into_the_weight_and_keeps_the_function(registry):
    model, adapter, names = adapted(registry, rank=4, alpha=12.0)
    randomize_b(model)
    scaling = 12.0 / 4
    expected = {}
    for n in names:
        m = model.get_submodule(n)
        expected[n] = m.weight.detach().clone() + scaling * (m.lora_B.detach() @ m.lora_A.detach())
    with torch.no_grad():
        unmerged = model(IDS)
        with adapter.disabled(model):
            base = model(IDS)
    assert not torch.allclose(unmerged, base)  # the update is not negligible

    merged = adapter.merge(model)
    assert merged is model
    assert not [m for m in model.modules() if isinstance(m, LoRALinear)]
    for n in names:
        m = model.get_submodule(n)
        assert type(m) is nn.Linear
        torch.testing.assert_close(m.weight, expected[n], rtol=0, atol=1e-6)
    assert model.get_submodule("blocks.0.attn.out").residual_projection is True
    assert not [k for k in model.state_dict() if "lora" in k]
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(IDS), unmerged, rtol=1e-5, atol=1e-5)


def test_disabled_gives_the_base_logits_and_restores_the_adapter(registry):
    base_model = tiny_model(registry)
    model, adapter, _ = adapted(registry)
    randomize_b(model)
    with torch.no_grad():
        want_base = base_model(IDS)
        with_adapter = model(IDS)
        assert not torch.allclose(with_adapter, want_base)
        with adapter.disabled(model):
            assert torch.equal(model(IDS), want_base)
        assert torch.equal(model(IDS), with_adapter)
        with pytest.raises(RuntimeError, match="boom"), adapter.disabled(model):
            raise RuntimeError("boom")
        assert torch.equal(model(IDS), with_adapter)


def test_dropout_applies_to_the_adapter_input_only_in_training(registry):
    model, _, _ = adapted(registry, dropout=0.5)
    reference, _, _ = adapted(registry, dropout=0.0)
    randomize_b(model)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        first, second = model(IDS), model(IDS)
        assert torch.equal(first, second)
        assert torch.equal(first, reference(IDS))
        model.train()
        torch.manual_seed(0)
        assert not torch.allclose(model(IDS), first)

    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8), rank=4, alpha=8.0, dropout=0.5).train()
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 16)
    with torch.no_grad():
        torch.manual_seed(7)
        got = layer(x)
        torch.manual_seed(7)
        dropped = F.dropout(x, 0.5, training=True)  # the same mask
        want = F.linear(x, layer.weight, layer.bias) + 2.0 * (dropped @ layer.lora_A.t() @ layer.lora_B.t())
        assert not torch.allclose(got, layer.eval()(x))
    torch.testing.assert_close(got, want)


def test_targets_select_the_layers_by_name(registry):
    _, _, names = adapted(registry, targets=["*.attn.qkv", "*.attn.out", "*.mlp.*"])
    assert names == sorted(ATTN + [f"blocks.{i}.mlp.{p}" for i in (0, 1) for p in ("up", "down")])
    model, _, names = adapted(registry, targets=["blocks.1.attn.qkv"])
    assert names == ["blocks.1.attn.qkv"]
    assert type(model.blocks[0].attn.qkv) is nn.Linear


def test_no_match_lists_the_linear_layers(registry):
    model = tiny_model(registry)
    with pytest.raises(CorekitError) as err:
        lora(registry, targets=["*.attention.q_proj"]).apply(model)
    message = str(err.value)
    for part in ("*.attention.q_proj", "blocks.*.attn.qkv", "blocks.*.mlp.down", "lm_head", "finetune.adapter.targets"):
        assert part in message
    assert "blocks.0." not in message
    assert not [m for m in model.modules() if isinstance(m, LoRALinear)]


def test_quantized_tied_and_already_adapted_layers_are_refused(registry):
    quantized = registry.build("compressor", {"name": "quantize"})._convert(tiny_model(registry), quantize_now=True)
    with pytest.raises(CorekitError, match="float nn.Linear.*QuantizedLinear.*compress"):
        lora(registry).apply(quantized)

    model = tiny_model(registry)  # lm_head shares the token embedding's weight
    with pytest.raises(CorekitError, match="lm_head.*tied"):
        lora(registry, targets=["lm_head"]).apply(model)

    model, adapter, _ = adapted(registry)
    with pytest.raises(CorekitError, match="already"):
        adapter.apply(model)


def test_the_adapter_file_is_under_5_percent_of_the_base_weights(registry, tmp_path):
    from safetensors.torch import save

    from corekit.assemble import build_model
    from corekit.spec import load_spec
    from corekit.weights import save_weights

    spec = load_spec(ROOT / "examples" / "tiny.toml", registry=registry)
    model = build_model(spec, registry)
    base_bytes = save_weights(model, spec, registry, tmp_path / "base.safetensors").stat().st_size
    adapter = lora(registry, rank=8)
    names = adapter.apply(model)
    assert len(names) == 2 * spec.model.n_layers
    state = adapter.state(model)
    assert all(t.device.type == "cpu" and not t.requires_grad for t in state.values())
    ratio = len(save(state)) / base_bytes
    print(f"lora rank 8 on {ROOT / 'examples' / 'tiny.toml'}: adapter/base bytes = {ratio:.4f}")
    assert ratio < 0.05


def test_state_dict_keys_are_the_base_keys_plus_the_adapter(registry):
    model = tiny_model(registry)
    base_state = copy.deepcopy(model.state_dict())
    adapter = lora(registry)
    names = adapter.apply(model)
    lora_keys = {f"{n}.{p}" for n in names for p in ("lora_A", "lora_B")}
    assert set(model.state_dict()) == set(base_state) | lora_keys
    assert set(adapter.state(model)) == lora_keys
    for key, tensor in adapter.state(model).items():
        assert torch.equal(tensor, model.state_dict()[key])
    assert model.blocks[0].attn.qkv.lora_A.shape == (8, 32)
    assert model.blocks[0].attn.qkv.lora_B.shape == (96, 8)
    bound = 1 / math.sqrt(32)  # kaiming_uniform_(a=sqrt(5)) on (r, in)
    assert 0 < model.blocks[0].attn.qkv.lora_A.abs().max() <= bound
    result = model.load_state_dict(base_state, strict=False)
    assert set(result.missing_keys) == lora_keys and not result.unexpected_keys
