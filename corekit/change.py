"""Changes to a built model that a run records: the interface of their products.

A run's model is :func:`corekit.assemble.build_model` of its spec, then every entry of the
spec's ``changes`` list, in order. An entry is a one-key table naming the kind of the
component that made the change and its parameters::

    [[changes]]
    head = { name = "classifier", labels = ["neg", "pos"] }

    [[changes]]
    adapter = { name = "lora", rank = 8 }

The stages that change a model (``corekit compress``, ``corekit finetune``) append their entry;
:class:`corekit.run.Run` builds each entry's component and calls :meth:`ModelChange.restore`
on the freshly built model, so its modules have the structure the saved weights need before
they are loaded. The kinds whose products are changes are marked ``change`` in
:mod:`corekit.kinds` (compressor, head, adapter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


class ModelChange:
    """What a component recorded in a run's ``changes`` list implements."""

    #: for a :attr:`foldable` change kept apart from the weights: a file in the run directory with the
    #: tensors its stage trained, read after ``model.safetensors`` (a key it repeats takes its tensor).
    #: The stage that makes the change writes it; other changes have their tensors in ``model.safetensors``
    weights_file: ClassVar[str | None] = None
    #: state-dict keys of the model before this change that the change removes: the weights
    #: files may still hold them (a base file shared with the run fine-tuned from) and they are skipped
    drops: ClassVar[tuple[str, ...]] = ()
    #: whether :meth:`fold` can fold the change into plain weights (an adapter can, a quantizer cannot)
    foldable: ClassVar[bool] = False

    def restore(self, model: nn.Module) -> nn.Module:
        """Give ``model``, as built so far, the structure this change left (called before loading
        the weights); the default changes nothing."""
        return model

    def fold(self, model: nn.Module) -> nn.Module:
        """For a :attr:`foldable` change: ``model`` (restored and loaded) with the change folded into
        plain weights; the result has the structure of the model without this change's entry."""
        raise NotImplementedError(f"{type(self).__name__} cannot be folded into the weights")


class Head(ModelChange):
    """A head that takes the LM head's place (kind ``head``): the model's forward then returns
    per-position scores over :attr:`labels` instead of token logits, so it cannot generate text.

    Params are :class:`corekit.params.HeadParams` (labels, pooling, max_length).
    """

    def __init__(self, params) -> None:
        self.params = params

    @property
    def labels(self) -> list[str]:
        """The class names, in output order."""
        return list(self.params.labels)

    @property
    def pooling(self) -> str:
        """How per-position scores become one row per text: ``last`` (the last real token) or ``mean``."""
        return self.params.pooling
