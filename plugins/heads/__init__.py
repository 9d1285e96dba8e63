"""Heads (kind ``head``): ``classifier``, a linear layer from the hidden state to class scores in
the LM head's place (what ``corekit finetune`` with ``task = "classify"`` attaches). The torch
code is in :mod:`corekit_plugins.heads.classifier`, imported on first build."""

from __future__ import annotations

from typing import Literal

from corekit import hookimpl
from corekit.params import HeadParams


class ClassifierParams(HeadParams):
    """A linear classification head: ``(B, T, d_model) -> (B, T, len(labels))``."""

    name: Literal["classifier"] = "classifier"


@hookimpl
def corekit_register_components(registry):
    registry.add("head", ClassifierParams, "corekit_plugins.heads.classifier:build")
