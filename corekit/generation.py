"""Autoregressive generation with a KV cache.

Prompts of different lengths are left-padded into one batch with an attention mask, so
every row is encoded exactly as it would be alone (positions count real tokens only).
Sampling: greedy (``temperature=0``), temperature, top-k, and top-p (nucleus, Holtzman et
al. 2020, arXiv:1904.09751), reproducible with ``seed``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import torch

from corekit.edge.sampling import check_sampling
from corekit.errors import CorekitError

if TYPE_CHECKING:  # pragma: no cover
    from corekit.modules.decoder import Decoder
    from corekit.tokenizer import Tokenizer


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set every logit below the k-th largest of its row to -inf. (B, V) -> (B, V)."""
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``p``. (B, V) -> (B, V)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of strictly more likely tokens
    sorted_logits = sorted_logits.masked_fill(before >= p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the next token of each row from (B, V) logits; returns (B,) ids."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float()
    # subtracting the row maximum keeps a tiny temperature from overflowing to inf/nan
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def _prompt_ids(prompts, tokenizer, vocab_size: int) -> list[list[int]]:
    if isinstance(prompts, str):
        raise CorekitError("prompts must be a list of prompts; wrap a single string as [text]")
    if isinstance(prompts, torch.Tensor):
        prompts = prompts.tolist()
    if prompts and isinstance(prompts[0], str):
        if tokenizer is None:
            raise CorekitError("string prompts need a tokenizer")
        return [tokenizer.encode(p) for p in prompts]
    id_lists = [list(map(int, p.tolist() if isinstance(p, torch.Tensor) else p)) for p in prompts]
    bad = sorted({i for ids in id_lists for i in ids if not 0 <= i < vocab_size})
    if bad:
        raise CorekitError(f"prompt token ids {bad[:5]} are outside the model's vocabulary [0, {vocab_size})")
    return id_lists


@torch.no_grad()
def generate(
    model: Decoder,
    prompts: Sequence[Sequence[int]] | Sequence[str],
    *,
    tokenizer: Tokenizer | None = None,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    stop_tokens: Sequence[int | None] = (),
    seed: int | None = None,
    use_cache: bool = True,
    on_token: Callable[[int, int], None] | None = None,
) -> list[list[int]] | list[str]:
    """Continue each prompt.

    Args:
        model: a :class:`~corekit.modules.decoder.Decoder`.
        prompts: token id lists, or strings (then ``tokenizer`` is required and strings
            are returned).
        tokenizer: encodes string prompts and decodes the results.
        max_new_tokens: most tokens to add per prompt; each row also stops when it fills
            the model's context length.
        temperature: 0 for greedy decoding; otherwise logits are divided by it.
        top_k: sample only from the k most likely tokens.
        top_p: sample only from the smallest set of tokens with this much probability.
        stop_tokens: ids that end a sequence (not included in its output); None entries
            are ignored.
        seed: seed for sampling, for reproducible results.
        use_cache: reuse past keys/values (False recomputes the whole sequence each step).
        on_token: called as ``on_token(row, token_id)`` for each new token, as it comes.

    Returns:
        The new tokens of each prompt (ids, or text when the prompts were strings).
    """
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    as_text = not isinstance(prompts, (str, torch.Tensor)) and bool(prompts) and isinstance(prompts[0], str)
    id_lists = _prompt_ids(prompts, tokenizer, model.vocab_size)
    if not id_lists:
        return []
    if any(len(ids) == 0 for ids in id_lists):
        raise CorekitError("every prompt needs at least one token")
    longest = max(len(ids) for ids in id_lists)
    if longest >= model.context_length:
        raise CorekitError(
            f"a prompt of {longest} tokens leaves no room in the context of {model.context_length} tokens"
        )
    # each row may fill the context; positions count real tokens, so rows are independent
    limits = [min(max_new_tokens, model.context_length - len(ids)) for ids in id_lists]
    # ids the tokenizer cannot decode (vocab_size padded past it) are never sampled
    usable = tokenizer.vocab_size if tokenizer is not None else model.vocab_size

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    batch = len(id_lists)
    ids = torch.zeros(batch, longest, dtype=torch.long, device=device)
    mask = torch.zeros(batch, longest, dtype=torch.long, device=device)
    for row, row_ids in enumerate(id_lists):
        ids[row, longest - len(row_ids):] = torch.tensor(row_ids, device=device)
        mask[row, longest - len(row_ids):] = 1
    padded = bool((mask == 0).any())
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    cache = model.new_cache() if use_cache else None
    stops = {int(s) for s in stop_tokens if s is not None}
    outputs: list[list[int]] = [[] for _ in range(batch)]
    finished = [limit == 0 for limit in limits]

    step_ids = ids
    try:
        while not all(finished):
            inputs = step_ids if use_cache else ids
            logits = model(inputs, attention_mask=mask if padded else None, cache=cache)[:, -1]  # (B, V)
            if usable < logits.shape[-1]:
                logits[:, usable:] = float("-inf")
            nxt = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            for row, token in enumerate(nxt.tolist()):
                if finished[row]:
                    continue
                if token in stops:
                    finished[row] = True
                    continue
                outputs[row].append(token)
                if on_token is not None:
                    on_token(row, token)
                finished[row] = len(outputs[row]) >= limits[row]
            if all(finished):
                break
            step_ids = nxt[:, None]  # (B, 1)
            ids = torch.cat([ids, step_ids], dim=1)
            # a finished row's further tokens are padding: its positions stop advancing
            alive = torch.tensor([[0 if done else 1] for done in finished], dtype=mask.dtype, device=device)
            mask = torch.cat([mask, alive], dim=1)
            padded = padded or not all(alive.flatten().tolist())
    finally:
        model.train(was_training)
    if as_text:
        return [tokenizer.decode(out) for out in outputs]  # type: ignore[union-attr]  # as_text implies a tokenizer
    return outputs
