"""Measuring a fine-tuned model on held-out examples, before and after fine-tuning.

- classify: accuracy, macro-F1 and the confusion matrix (:mod:`corekit.finetune.metrics`);
- instruct: response-only validation loss, and greedy answers to held-out prompts scored by
  exact match and ROUGE-L;
- preference: DPO loss, reward margin and preference accuracy against the reference, and
  how often the model alone gives the chosen response more probability than the rejected.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from corekit.finetune.model import pool
from corekit.finetune.tasks import (
    IGNORE,
    TokenExample,
    collate_classify,
    collate_lm,
    collate_preference,
    dpo_loss,
    response_loss,
    sequence_logprobs,
)


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


@torch.no_grad()
def classify_predictions(model, examples: Sequence[tuple[list[int], int]], pooling: str,
                         batch_size: int = 32) -> tuple[list[int], torch.Tensor]:
    """Predicted label ids and class probabilities (N, C) of ``(ids, label)`` examples."""
    model.eval()
    probs = []
    for chunk in _batches(examples, batch_size):
        ids, lengths, _ = collate_classify(chunk)
        probs.append(torch.softmax(pool(model(ids), lengths, pooling).float(), -1))
    all_probs = torch.cat(probs)
    return all_probs.argmax(-1).tolist(), all_probs


def evaluate_classify(model, examples: Sequence[tuple[list[int], int]], labels: Sequence[str], pooling: str) -> dict:
    """Accuracy, macro-F1 and confusion matrix on ``examples``."""
    from corekit.finetune.metrics import classification_metrics

    preds, _ = classify_predictions(model, examples, pooling)
    return classification_metrics(preds, [label for _, label in examples], labels)


@torch.no_grad()
def response_val_loss(model, examples: Sequence[TokenExample], batch_size: int = 16) -> float:
    """Mean cross-entropy over every response token of ``examples``."""
    model.eval()
    total, count = 0.0, 0
    for chunk in _batches(examples, batch_size):
        inputs, targets = collate_lm(chunk)
        n = int((targets != IGNORE).sum())
        total += float(response_loss(model(inputs), targets)) * n
        count += n
    return total / max(count, 1)


def answers(model, tokenizer, template, conversations: Sequence[list[dict]], max_new_tokens: int,
            batch_size: int = 8) -> list[str]:
    """Greedy replies to each conversation's last user turn (the template's prompt), cut at its stop."""
    from corekit.generation import generate

    stop = tokenizer.special_tokens.get(template.stop)
    prompts = [tokenizer.encode(template.prompt(conv)) for conv in conversations]
    room = model.context_length - 1
    prompts = [p[-room:] for p in prompts]
    out: list[str] = []
    for chunk in _batches(prompts, batch_size):
        ids = generate(model, chunk, max_new_tokens=max_new_tokens, temperature=0.0, stop_tokens=[stop])
        out += [tokenizer.decode([i for i in row if i < tokenizer.vocab_size]) for row in ids]
    return out


def evaluate_instruct(model, tokenizer, template, val: Sequence[TokenExample], held_out: Sequence[list[dict]],
                      max_new_tokens: int, samples: int = 3) -> dict[str, Any]:
    """Validation loss on responses, and exact match / ROUGE-L of greedy answers to ``held_out``
    (conversations whose last message is the reference reply)."""
    from corekit.finetune.metrics import generation_metrics

    result: dict[str, Any] = {"val_loss": response_val_loss(model, val)}
    if held_out:
        replies = answers(model, tokenizer, template, [c[:-1] for c in held_out], max_new_tokens)
        references = [c[-1]["content"] for c in held_out]
        result.update(generation_metrics(replies, references))
        result["samples"] = [{"prompt": c[-2]["content"], "reference": ref, "answer": reply}
                             for c, ref, reply in list(zip(held_out, references, replies))[:samples]]
    return result


@torch.no_grad()
def evaluate_preference(model, pairs: Sequence[tuple[TokenExample, TokenExample]], beta: float, reference,
                        adapter=None, batch_size: int = 8) -> dict[str, float]:
    """DPO loss, reward margin and accuracy against ``reference`` (or ``model`` with ``adapter``
    off), and the share of pairs where the model gives the chosen response the higher log-probability."""
    model.eval()
    results, prefers = [], []
    for chunk in _batches(pairs, batch_size):
        inputs, targets = collate_preference(chunk)
        n = len(chunk)
        policy = sequence_logprobs(model(inputs), targets)
        if reference is None:
            with adapter.disabled(model):
                ref = sequence_logprobs(model(inputs), targets)
        else:
            ref = sequence_logprobs(reference(inputs), targets)
        results.append((dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], beta), n))
        prefers.append((policy[:n] > policy[n:]).float())
    total = sum(n for _, n in results)
    margins = torch.cat([r.chosen_rewards - r.rejected_rewards for r, _ in results])
    return {
        "dpo_loss": sum(float(r.loss) * n for r, n in results) / total,
        "reward_margin": float(margins.mean()),
        "preference_accuracy": float((margins > 0).float().mean()),
        "logprob_accuracy": float(torch.cat(prefers).mean()),
        "count": total,
    }


def classifier_examples(spec, tokenizer, path: str | None = None) -> tuple[list[tuple[list[int], int]], str]:
    """Labelled examples to evaluate a classifier run on: the file ``path``, or the validation
    split its fine-tuning held out (made again from the spec's data and seed). Returns the
    examples and where they came from."""
    from corekit.finetune import data as fd

    ft = spec.finetune
    if path is not None:
        records, where = fd.read_records(path), str(path)
    else:
        records = fd.read_records(ft.data.train)
        _, records = fd.split(records, ft.data.val, ft.data.val_fraction, spec.train.seed)
        where = ft.data.val or f"the held-out {ft.data.val_fraction:.0%} of {ft.data.train}"
    examples = fd.classify_examples(records, ft.data.text_field, ft.data.label_field)
    head = spec.change_params("head")[-1]  # the classifier's labels, in output order
    ids = fd.label_ids(examples, head.labels)
    limit = head.max_length or spec.model.context_length
    return [(fd.text_ids(tokenizer, text, limit), i) for (text, _, _), i in zip(examples, ids)], where
