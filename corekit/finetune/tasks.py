"""The LightningModules of fine-tuning and the batches they read.

- :class:`ClassifyTask`: cross-entropy of pooled class logits.
- :class:`InstructTask`: next-token cross-entropy on response tokens only; prompt and padding
  targets are ``-100`` (:data:`IGNORE`), so they add nothing to the loss or its gradient.
- :class:`PreferenceTask`: DPO (Rafailov et al. 2023, "Direct Preference Optimization: Your
  Language Model is Secretly a Reward Model", arXiv:2305.18290) against a frozen reference:
  the base model itself with the adapter switched off, or a frozen copy.

Batches are padded per batch on the right; with causal attention a real token never sees
the padding after it, so no attention mask is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from corekit.finetune.model import pool
from corekit.finetune.template import Segment
from corekit.train.module import LanguageModelTask

IGNORE = -100


# --------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class TokenExample:
    """A tokenized sequence; ``train[i]`` says whether token ``i`` is a target the loss counts."""

    ids: list[int]
    train: list[bool]


def encode_segments(tokenizer, segments: Sequence[Segment], max_tokens: int) -> TokenExample | None:
    """Tokenize rendered segments one by one (a prompt then encodes exactly as it will at
    inference), cut to ``max_tokens``; None when no trained token is left."""
    ids: list[int] = []
    train: list[bool] = []
    for seg in segments:
        part = tokenizer.encode(seg.text)
        ids += part
        train += [seg.train] * len(part)
    ids, train = ids[:max_tokens], train[:max_tokens]
    return TokenExample(ids, train) if any(train[1:]) else None


def lm_pair(example: TokenExample) -> tuple[list[int], list[int]]:
    """(inputs, targets) for next-token training: ``targets[j] = ids[j+1]`` where that token
    is trained, else :data:`IGNORE`."""
    ids, train = example.ids, example.train
    return ids[:-1], [t if keep else IGNORE for t, keep in zip(ids[1:], train[1:])]


def pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Right-pad rows to the longest: (B, T)."""
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


class Examples(Dataset):
    """A list as a map-style dataset."""

    def __init__(self, items: Sequence) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def collate_classify(items: Sequence[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids (B, T), lengths (B,), labels (B,))."""
    return (pad([ids for ids, _ in items], 0), torch.tensor([len(ids) for ids, _ in items]),
            torch.tensor([label for _, label in items]))


def collate_lm(items: Sequence[TokenExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (B, T), targets (B, T)) with :data:`IGNORE` on prompt and padding targets."""
    pairs = [lm_pair(e) for e in items]
    return pad([i for i, _ in pairs], 0), pad([t for _, t in pairs], IGNORE)


def collate_preference(items: Sequence[tuple[TokenExample, TokenExample]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Chosen rows then rejected rows, padded together: (inputs (2B, T), targets (2B, T))."""
    return collate_lm([c for c, _ in items] + [r for _, r in items])


# --------------------------------------------------------------------------- losses
def response_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over targets that are not :data:`IGNORE`; logits (B, T, V)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of log p(target) over each row's counted targets: (B, T, V), (B, T) -> (B,)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    counted = targets != IGNORE
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    return (picked * counted).sum(-1)


@dataclass
class DPOResult:
    """The DPO loss of a batch and its implicit rewards ``beta * (log pi - log ref)``."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor

    @property
    def margin(self) -> torch.Tensor:
        return (self.chosen_rewards - self.rejected_rewards).mean()

    @property
    def accuracy(self) -> torch.Tensor:
        return (self.chosen_rewards > self.rejected_rewards).float().mean()


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> DPOResult:
    """``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))``, averaged over pairs; the
    arguments are summed response log-probabilities, (B,) each."""
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    return DPOResult(-F.logsigmoid(chosen - rejected).mean(), chosen.detach(), rejected.detach())


# --------------------------------------------------------------------------- tasks
class TuningTask(LanguageModelTask):
    """The fine-tuning tasks' base: tables trained row by row stay out of weight decay."""

    #: parameters kept out of weight decay (row-masked embedding tables, whose frozen rows it would shrink)
    no_decay: list = []

    def adjust_optimizer(self, optimizer) -> None:
        from corekit.finetune.model import exclude_from_decay

        exclude_from_decay(optimizer, self.no_decay)


class ClassifyTask(TuningTask):
    """Cross-entropy of pooled class logits; validation logs ``val_loss`` and ``val_acc``."""

    def __init__(self, model, spec, registry, pooling: str) -> None:
        super().__init__(model, spec, registry)
        self.pooling = pooling
        self._correct = self._seen = 0

    def logits(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return pool(self.model(ids), lengths, self.pooling)  # (B, C)

    def loss(self, batch) -> torch.Tensor:
        ids, lengths, labels = batch
        return F.cross_entropy(self.logits(ids, lengths).float(), labels)

    def validation_step(self, batch, batch_idx: int) -> None:
        ids, lengths, labels = batch
        logits = self.logits(ids, lengths).float()
        self.val_loss.update(F.cross_entropy(logits, labels), weight=len(labels))
        self._correct += int((logits.argmax(-1) == labels).sum())
        self._seen += len(labels)

    def on_validation_epoch_end(self) -> None:
        value = self.val_loss.compute()
        self.log("val_loss", value, prog_bar=True, sync_dist=True)
        self.log("val_acc", self._correct / max(self._seen, 1), prog_bar=True)
        self.val_loss.reset()
        self._correct = self._seen = 0


class InstructTask(TuningTask):
    """Next-token cross-entropy on response tokens only."""

    def loss(self, batch) -> torch.Tensor:
        inputs, targets = batch
        return response_loss(self.model(inputs), targets)

    def validation_step(self, batch, batch_idx: int) -> None:
        self.val_loss.update(self.loss(batch), weight=int((batch[1] != IGNORE).sum()))


class PreferenceTask(TuningTask):
    """DPO on (chosen, rejected) pairs against a frozen reference model."""

    def __init__(self, model, spec, registry, beta: float, *, reference=None, adapter=None) -> None:
        """
        Args:
            reference: the frozen reference model (kept out of Lightning's reach); or None with
                ``adapter``, when the reference is the model with its adapter switched off (which
                needs no second copy, but only holds when nothing else of the model trains).
        """
        super().__init__(model, spec, registry)
        if reference is None and adapter is None:
            raise ValueError("PreferenceTask needs a reference model or an adapter to switch off")
        self.beta = beta
        self.adapter = adapter if reference is None else None
        if reference is not None:
            reference.eval().requires_grad_(False)
        # In a tuple, not a submodule: Lightning's train()/eval(), checkpoints and the optimizer never see it.
        self._reference = (reference,)
        self._val: list[DPOResult] = []

    def on_fit_start(self) -> None:
        if self._reference[0] is not None:
            self._reference[0].to(self.device).eval()

    def reference_logprobs(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed response log-probabilities under the reference, (2B,)."""
        with torch.no_grad():
            if self._reference[0] is not None:
                return sequence_logprobs(self._reference[0](inputs), targets)
            was_training = self.model.training
            self.model.eval()  # the reference is deterministic: no dropout
            try:
                with self.adapter.disabled(self.model):
                    return sequence_logprobs(self.model(inputs), targets)
            finally:
                self.model.train(was_training)

    def dpo(self, batch) -> DPOResult:
        inputs, targets = batch
        n = inputs.shape[0] // 2
        policy = sequence_logprobs(self.model(inputs), targets)  # (2B,)
        ref = self.reference_logprobs(inputs, targets)
        return dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], self.beta)

    def loss(self, batch) -> torch.Tensor:
        return self.dpo(batch).loss

    def training_loss(self, batch) -> torch.Tensor:
        result = self.dpo(batch)
        self.log("reward_margin", result.margin, prog_bar=True)
        self.log("pref_acc", result.accuracy)
        return result.loss

    def validation_step(self, batch, batch_idx: int) -> None:
        result = self.dpo(batch)
        self.val_loss.update(result.loss, weight=batch[0].shape[0] // 2)
        self._val.append(result)

    def on_validation_epoch_end(self) -> None:
        self.log("val_loss", self.val_loss.compute(), prog_bar=True, sync_dist=True)
        self.val_loss.reset()
        if self._val:
            self.log("val_reward_margin", torch.cat([r.chosen_rewards - r.rejected_rewards for r in self._val]).mean())
            self.log("val_pref_acc",
                     torch.cat([(r.chosen_rewards > r.rejected_rewards).float() for r in self._val]).mean())
        self._val = []
def inputs_pairs(batch) -> int:
    return batch[0].shape[0] // 2
