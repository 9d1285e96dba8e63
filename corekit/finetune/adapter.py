"""Adapters: the interface of ``adapter`` components (kind ``adapter``, e.g. ``lora``).

An adapter adds a few trainable weights to a frozen model (Hu et al. 2021, "LoRA: Low-Rank
Adaptation of Large Language Models", arXiv:2106.09685). Fine-tuning with one trains and
saves only those weights; :meth:`Adapter.merge` folds them into the base weights so that
export and compressors see a plain model again.

A run fine-tuned with an unmerged adapter records it in its spec's ``changes``; as a
:class:`corekit.change.ModelChange` the adapter restores itself on a freshly built model
(:meth:`Adapter.restore`), its tensors come from ``adapter.safetensors`` beside the base
weights, and folding it is :meth:`Adapter.merge`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager

from torch import nn

from corekit.change import ModelChange

#: where a run fine-tuned with an unmerged adapter keeps the adapter's tensors (and the other
#: tensors its fine-tuning trained), beside the base weights in model.safetensors
ADAPTER_FILE = "adapter.safetensors"


class Adapter(ModelChange, ABC):
    """Adds, lists, merges and switches off the adapter weights of a model."""

    weights_file = ADAPTER_FILE
    foldable = True

    def restore(self, model: nn.Module) -> nn.Module:
        """The adapter applied to a freshly built model (before its weights load); every
        parameter is left trainable, as on any loaded model."""
        self.apply(model)
        model.requires_grad_(True)
        return model

    def fold(self, model: nn.Module) -> nn.Module:
        return self.merge(model)

    @abstractmethod
    def apply(self, model: nn.Module) -> list[str]:
        """Add the adapter to ``model`` in place and freeze every other parameter: afterwards
        exactly the adapter's parameters have ``requires_grad``. State-dict keys of the base
        weights do not change, so base weights load into an adapted model as they are.

        Returns:
            The names of the modules adapted.

        Raises:
            CorekitError: the target patterns match no adaptable module (the message lists
                the module names that could be targeted).
        """

    @abstractmethod
    def state(self, model: nn.Module) -> dict[str, "torch.Tensor"]:  # noqa: F821
        """The adapter's own tensors by state-dict key (what an adapter file holds)."""

    @abstractmethod
    def merge(self, model: nn.Module) -> nn.Module:
        """Fold the adapter into the base weights and remove it; the model computes the same
        function and is a plain model (every adapted module back to its original type)."""

    @abstractmethod
    def disabled(self, model: nn.Module) -> AbstractContextManager:
        """A context in which ``model`` computes as if the adapter were absent (the frozen
        reference model of DPO, without a second copy of the weights)."""
