"""The ``classifier`` head: :class:`corekit.finetune.model.ClassifierHead` in ``model.lm_head``."""

from __future__ import annotations

from torch import nn

from corekit.change import Head


class Classifier(Head):
    """Puts a linear classification head over the labels in the LM head's place."""

    drops = ("lm_head.weight",)  # the language-model head it replaces (kept in a shared base file)

    def restore(self, model: nn.Module) -> nn.Module:
        from corekit.finetune.model import attach_classifier

        return attach_classifier(model, len(self.labels))


def build(params) -> Classifier:
    return Classifier(params)
