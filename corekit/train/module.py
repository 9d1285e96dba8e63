"""The LightningModule that trains a decoder on next-token prediction.

Loss is the mean cross-entropy over every target token; validation loss is averaged over
tokens with a torchmetrics ``MeanMetric`` and perplexity is its exponential. The optimizer
and LR schedule are the spec's plugins, the schedule stepped once per optimizer step.
"""

from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from corekit.errors import CorekitError


class NonFiniteLossError(CorekitError):
    """The training loss became NaN or infinite."""


class LanguageModelTask(L.LightningModule):
    """Next-token training of ``model`` with the spec's optimizer and schedule."""

    def __init__(self, model: torch.nn.Module, spec, registry) -> None:
        """
        Args:
            model: the decoder to train.
            spec: the validated run spec (its ``train`` section is used).
            registry: the plugin registry that builds the optimizer and schedule.
        """
        super().__init__()
        self.model = model
        self.spec = spec
        self.registry = registry
        self.val_loss = MeanMetric()
        self._last_step_time: float | None = None

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch  # (B, T) each
        logits = self.model(inputs)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {loss.item()} at step {self.global_step}; training stopped and "
                "the last good checkpoint is kept. Lower train.optimizer.lr, raise warmup, or clip gradients "
                "(train.grad_clip)."
            )
        now = time.perf_counter()
        if self._last_step_time is not None:
            tokens = batch[0].numel() * max(1, self.trainer.world_size)
            self.log("tok_s", tokens / max(now - self._last_step_time, 1e-9), prog_bar=True)
        self._last_step_time = now
        self.log("train_loss", loss, prog_bar=True)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self.val_loss.update(self.loss(batch), weight=batch[1].numel())

    def on_validation_epoch_end(self) -> None:
        value = self.val_loss.compute()
        self.log("val_loss", value, prog_bar=True, sync_dist=True)
        self.log("val_ppl", torch.exp(value), sync_dist=True)
        self.val_loss.reset()

    def configure_optimizers(self):
        train = self.spec.train
        optimizer = self.registry.build("optimizer", train.optimizer, self.model)
        scheduler = self.registry.build("scheduler", train.scheduler, optimizer, train.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

