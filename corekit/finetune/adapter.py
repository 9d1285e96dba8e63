"""Adapters: the interface of ``adapter`` components (kind ``adapter``, e.g. ``lora``).

An adapter adds a few trainable weights to a frozen model (Hu et al. 2021, "LoRA: Low-Rank
Adaptation of Large Language Models", arXiv:2106.09685). Fine-tuning with one trains and
saves only those weights; :meth:`Adapter.merge` folds them into the base weights so that
export and compressors see a plain model again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager

from torch import nn


class Adapter(ABC):
    """Adds, lists, merges and switches off the adapter weights of a model."""

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
