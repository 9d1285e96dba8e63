"""Generation with a KV cache: equal to recomputation, batching, sampling controls."""

from __future__ import annotations

import pytest
import torch

from corekit.errors import CorekitError
from corekit.generation import generate, sample_next, top_k_filter, top_p_filter
from helpers import attention, tiny_model

VARIANTS = [
    {"attention": attention("mha", "math"), "position": "learned"},
    {"attention": attention("gqa", "flash"), "position": "rope", "mlp": {"activation": "swiglu"}, "norm": "rmsnorm"},
    {"attention": attention("mqa", "flash"), "position": "alibi"},
    {"attention": attention("gqa", "math", window=5), "position": "rope"},
    {"attention": attention("mha", "flash", window=4), "position": "sinusoidal", "layout": "parallel"},
    {"attention": attention("mha", "flash"), "position": "none", "layout": "post"},
]


def _peaky(model):
    """Scale the LM head so greedy choices are well separated (no ties from noise)."""
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v['attention']['name']}-{v['position']}")
def test_cache_equals_recompute(registry, variant):
    model = _peaky(tiny_model(registry, **variant))
    prompts = [[3, 14, 15, 9, 2, 6], [5, 3]]
    with_cache = generate(model, prompts, max_new_tokens=20, temperature=0)
    without = generate(model, prompts, max_new_tokens=20, temperature=0, use_cache=False)
    assert with_cache == without
    assert all(len(out) == 20 for out in with_cache)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v['attention']['name']}-{v['position']}")
def test_batched_mixed_lengths_equal_each_alone(registry, variant):
    model = _peaky(tiny_model(registry, **variant))
    prompts = [[7], [1, 2, 3, 4, 5, 6, 7, 8, 9], [40, 41, 42]]
    together = generate(model, prompts, max_new_tokens=12, temperature=0)
    alone = [generate(model, [p], max_new_tokens=12, temperature=0)[0] for p in prompts]
    assert together == alone


@pytest.mark.parametrize("variant", VARIANTS[:4], ids=lambda v: f"{v['attention']['name']}-{v['position']}")
def test_chunked_prefill_with_cache_equals_full_forward(registry, variant):
    """Feeding a sequence in chunks through the cache gives the logits of one full pass."""
    model = tiny_model(registry, **variant)
    ids = torch.randint(0, 64, (2, 17))
    full = model(ids)
    cache = model.new_cache()
    parts = [model(ids[:, a:b], cache=cache) for a, b in [(0, 6), (6, 9), (9, 10), (10, 17)]]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)
    assert cache.length == 17


def test_greedy_is_argmax_of_full_forward(registry):
    model = _peaky(tiny_model(registry))
    prompt = [4, 8, 15]
    out = generate(model, [prompt], max_new_tokens=5, temperature=0)[0]
    seq = list(prompt)
    for token in out:
        assert token == model(torch.tensor([seq]))[0, -1].argmax().item()
        seq.append(token)


def test_stop_token_ends_a_row_and_is_not_returned(registry):
    model = _peaky(tiny_model(registry))
    free = generate(model, [[1, 2, 3], [9, 9]], max_new_tokens=10, temperature=0)
    stop = free[0][4]
    first = free[0].index(stop)
    stopped = generate(model, [[1, 2, 3], [9, 9]], max_new_tokens=10, temperature=0, stop_tokens=[stop])
    assert stopped[0] == free[0][:first]
    expected_second = free[1][: free[1].index(stop)] if stop in free[1] else free[1]
    assert stopped[1] == expected_second


def test_seed_makes_sampling_reproducible(registry):
    model = tiny_model(registry)
    a = generate(model, [[1, 2]], max_new_tokens=30, temperature=1.0, seed=7)
    b = generate(model, [[1, 2]], max_new_tokens=30, temperature=1.0, seed=7)
    c = generate(model, [[1, 2]], max_new_tokens=30, temperature=1.0, seed=8)
    assert a == b
    assert a != c


def test_top_k_filter_keeps_exactly_k():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    out = top_k_filter(logits, 2)
    assert torch.isfinite(out).sum().item() == 2
    assert torch.isfinite(out[0, [1, 3]]).all()


def test_top_p_filter_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    logits = probs.log()
    kept = torch.isfinite(top_p_filter(logits, 0.8))[0].tolist()
    assert kept == [True, False, True, False]  # 0.5 + 0.3 reaches 0.8
    kept = torch.isfinite(top_p_filter(logits, 0.81))[0].tolist()
    assert kept == [True, False, True, True]
    kept = torch.isfinite(top_p_filter(logits, 0.1))[0].tolist()
    assert kept == [True, False, False, False]  # the top token always stays


def test_sampling_respects_top_k_and_temperature():
    logits = torch.tensor([[0.0, 1.0, 5.0, 4.0]]).expand(2000, 4)
    gen = torch.Generator().manual_seed(0)
    picks = sample_next(logits, temperature=1.0, top_k=2, generator=gen)
    assert set(picks.tolist()) == {2, 3}
    freq = (picks == 2).float().mean().item()
    assert freq == pytest.approx(torch.softmax(torch.tensor([5.0, 4.0]), 0)[0].item(), abs=0.04)
    cold = sample_next(logits, temperature=0.05, generator=gen)
    assert (cold == 2).all()
    assert torch.equal(sample_next(logits, temperature=0), torch.full((2000,), 2))


def test_string_prompts_round_trip_through_tokenizer(registry):
    tok = registry.build("tokenizer", "bytes")
    model = tiny_model(registry, vocab_size=257)
    out = generate(model, ["ab", "c"], tokenizer=tok, max_new_tokens=4, temperature=0)
    ids = generate(model, [tok.encode("ab"), tok.encode("c")], max_new_tokens=4, temperature=0)
    assert out == [tok.decode(i) for i in ids]


def test_on_token_streams_every_token(registry):
    model = tiny_model(registry)
    seen = []
    out = generate(model, [[1], [2, 3]], max_new_tokens=5, temperature=0, on_token=lambda r, t: seen.append((r, t)))
    assert sorted(seen) == sorted((r, t) for r, toks in enumerate(out) for t in toks)


def test_generation_stops_at_context_length(registry):
    model = tiny_model(registry)  # context 32
    out = generate(model, [[1] * 30], max_new_tokens=10, temperature=0)
    assert len(out[0]) == 2
    with pytest.raises(CorekitError, match="no room"):
        generate(model, [[1] * 32], max_new_tokens=1)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p"),
     ({"max_new_tokens": -2}, "max_new_tokens")],
)
def test_bad_sampling_arguments(registry, kwargs, match):
    model = tiny_model(registry)
    with pytest.raises(CorekitError, match=match):
        generate(model, [[1]], **kwargs)


def test_model_mode_is_restored(registry):
    model = tiny_model(registry).train()
    generate(model, [[1]], max_new_tokens=2)
    assert model.training


# --------------------------------------------------------------------------- review regressions
def test_ids_past_the_tokenizer_are_never_sampled(registry):
    """vocab_size padded past the tokenizer (e.g. gpt2-small with bytes): only decodable ids."""
    tok = registry.build("tokenizer", "bytes")  # 257 ids
    model = tiny_model(registry, vocab_size=320)
    with torch.no_grad():
        model.lm_head.weight[257:] += 5.0  # make the unusable ids the most likely
    for temperature in (0, 1.0):
        out = generate(model, [tok.encode("hi")], tokenizer=tok, max_new_tokens=20, temperature=temperature, seed=0)
        assert max(out[0]) < 257


def test_rows_near_the_context_end_match_generating_alone(registry):
    model = _peaky(tiny_model(registry))  # context 32
    prompts = [[1] * 30, [5, 6]]
    together = generate(model, prompts, max_new_tokens=40, temperature=0)
    alone = [generate(model, [p], max_new_tokens=40, temperature=0)[0] for p in prompts]
    assert together == alone
    assert [len(o) for o in together] == [2, 30]


@pytest.mark.parametrize("temperature", [1e-30, 1e-45])
def test_tiny_temperature_is_greedy_not_nan(registry, temperature):
    model = _peaky(tiny_model(registry))
    out = generate(model, [[1, 2]], max_new_tokens=6, temperature=temperature, seed=0)
    assert out == generate(model, [[1, 2]], max_new_tokens=6, temperature=0)


@pytest.mark.parametrize(
    "prompts,match",
    [("hello", "list of prompts"), ([[1, 999]], "outside the model's vocabulary"), ([[-1]], "outside")],
)
def test_bad_prompts(registry, prompts, match):
    with pytest.raises(CorekitError, match=match):
        generate(tiny_model(registry), prompts, max_new_tokens=2)


def test_tensor_prompts_and_none_stop_tokens(registry):
    model = _peaky(tiny_model(registry))
    as_lists = generate(model, [[3, 4, 5]], max_new_tokens=4, temperature=0)
    assert generate(model, torch.tensor([[3, 4, 5]]), max_new_tokens=4, temperature=0, stop_tokens=[None]) == as_lists


@pytest.mark.parametrize("temperature", [float("nan"), float("inf")])
def test_non_finite_temperature(registry, temperature):
    with pytest.raises(CorekitError, match="temperature"):
        generate(tiny_model(registry), [[1]], temperature=temperature)
