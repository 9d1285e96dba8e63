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
        # train.compile: the loss (forward and cross-entropy, one graph) runs torch.compile'd. A
        # compiled function, unlike a compiled module, is not a submodule, so checkpoints keep the
        # eager parameter names (a compiled run resumes without compile and back) and generation
        # runs the eager model.
        self.compiled = torch.compile(self._loss) if spec.train.compile else None
        self.spec = spec
        self.registry = registry
        self.val_loss = MeanMetric()
        self._last_step_time: float | None = None

    def _loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.model(inputs)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy of next-token prediction; ``batch`` is (inputs, targets), (B, T) each."""
        return (self.compiled or self._loss)(*batch)

    def training_loss(self, batch) -> torch.Tensor:
        """The loss :meth:`training_step` minimises (:meth:`loss`; subclasses may log more here)."""
        return self.loss(batch)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(batch)
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

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Lightning zeroes gradients just before the next backward, so they would stay allocated
        # through the next forward pass (for GPT-2 small, 0.5 GB more at the peak). Free them now;
        # with accumulation this runs only after the last micro-batch, as the step itself does.
        optimizer.zero_grad(set_to_none=True)

    def adjust_optimizer(self, optimizer) -> None:
        """Change the optimizer's parameter groups before the schedule is built (default: nothing)."""

    def configure_optimizers(self):
        train = self.spec.train
        params = train.optimizer
        if train.needs_unfused_optimizer and getattr(params, "fused", False) is None:
            # "fused where available" becomes foreach (spec validation rejects fused = true here).
            params = params.model_copy(update={"fused": False})
        optimizer = self.registry.build("optimizer", params, self.model)
        self.adjust_optimizer(optimizer)
        scheduler = self.registry.build("scheduler", train.scheduler, optimizer, train.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

