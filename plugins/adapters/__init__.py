"""Adapters (kind ``adapter``): ``lora``, low-rank updates of chosen Linear layers
(Hu et al. 2021, arXiv:2106.09685). The torch code is in :mod:`corekit_plugins.adapters.lora`,
imported on first build so listing plugins stays cheap."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from corekit import hookimpl
from corekit.params import Params


class LoRAParams(Params):
    """LoRA: ``W x + (alpha / rank) * B A dropout(x)``, ``A`` random and ``B`` zero at the start."""

    name: Literal["lora"] = "lora"
    rank: PositiveInt = Field(8, description="rank r of the update B A")
    alpha: PositiveFloat = Field(16.0, description="scale numerator: the update is multiplied by alpha / rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter's input")
    targets: list[str] = Field(
        default_factory=lambda: ["*.attn.qkv", "*.attn.out"],
        min_length=1,
        description="fnmatch patterns of Linear module names to adapt (default: every attention projection); "
                    "e.g. '*.mlp.*' adds the MLPs. `corekit finetune` lists the names when nothing matches",
    )


@hookimpl
def corekit_register_components(registry):
    registry.add("adapter", LoRAParams, "corekit_plugins.adapters.lora:build")
