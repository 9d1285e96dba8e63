"""Compressor components: ``quantize``, ``prune`` and ``distill``.

Each acts on a trained run through ``corekit compress RUN --with NAME`` or a ``[compress]``
stage of ``corekit run`` (see :mod:`corekit.compress`). Params live here so that listing
plugins stays cheap; the modules with torch code are imported on first build.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from corekit import hookimpl
from corekit.params import Params


class QuantizeParams(Params):
    """Weight-only quantization of every Linear: int8 per channel, or int4 in groups."""

    name: Literal["quantize"] = "quantize"
    bits: Literal[8, 4] = Field(8, description="8: int8 per output channel; 4: int4 in groups of group_size")
    group_size: Literal[16, 32, 64, 128, 256] | None = Field(
        None,
        description="weights per scale along the input (default: the whole row at 8 bits, 64 at 4 bits); a layer "
                    "whose width it does not divide takes the largest power of two >= 16 that does, else whole rows",
    )
    kernel: Literal["dequantize", "dynamic"] = Field(
        "dequantize",
        description="PyTorch CPU matmuls: dequantize the weight (exact weight-only), or torch.ao dynamic int8 "
                    "(activations quantized per call; 8 bits per channel only)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> QuantizeParams:
        if self.bits == 4 and self.group_size is None:
            object.__setattr__(self, "group_size", 64)
        if self.kernel == "dynamic" and (self.bits != 8 or self.group_size is not None):
            raise ValueError(
                f"kernel='dynamic' runs torch.ao's int8 per-channel matmuls: it needs bits=8 and no group_size "
                f"(got bits={self.bits}, group_size={self.group_size})"
            )
        return self


class PruneParams(Params):
    """Pruning: zero the smallest weights, or remove whole attention heads and MLP neurons."""

    name: Literal["prune"] = "prune"
    method: Literal["unstructured", "structured"] = Field(
        "unstructured",
        description="unstructured: zero the smallest-magnitude weights (same shapes); structured: remove heads "
                    "(KV groups for GQA) and MLP neurons, giving a smaller spec",
    )
    sparsity: float = Field(
        0.5, ge=0.0, lt=1.0,
        description="unstructured: share of prunable weights set to zero; structured: share of heads and of MLP "
                    "neurons removed from every layer (unless heads/neurons say otherwise)",
    )
    scope: Literal["global", "layer"] = Field(
        "global", description="unstructured: one magnitude threshold over all blocks, or the same sparsity per layer"
    )
    heads: float | None = Field(None, ge=0.0, lt=1.0, description="structured: share of heads removed per layer")
    neurons: float | None = Field(
        None, ge=0.0, lt=1.0, description="structured: share of MLP neurons removed per layer"
    )
    importance: Literal["activation", "magnitude"] = Field(
        "activation",
        description="structured: score heads and neurons by their mean contribution on training batches, or by "
                    "weight norms alone",
    )
    calibration_batches: PositiveInt = Field(4, description="structured, activation importance: batches scored")
    recover_steps: NonNegativeInt = Field(
        0, description="fine-tune this many steps with the run's trainer afterwards (pruned weights stay zero)"
    )
    recover_lr: PositiveFloat | None = Field(None, description="learning rate of the recovery (default: the run's)")


class DistillParams(Params):
    """Knowledge distillation: train a smaller student on the run (the teacher)'s predictions."""

    name: Literal["distill"] = "distill"
    student: dict[str, Any] = Field(
        default_factory=dict,
        description="[model] fields of the student that differ from the teacher's (or from `spec`'s), "
                    "e.g. {n_layers = 2}",
    )
    spec: str | None = Field(
        None, description="a spec file whose [model] the student starts from; its [tokenizer] must be the teacher's"
    )
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the distillation term; 1 - alpha weighs the CE")
    temperature: PositiveFloat = Field(
        1.0, description="softmax temperature T of both models in the KD term (T = 2 did worse than 1 for small "
                         "byte-level students in our runs)"
    )
    steps: PositiveInt | None = Field(None, description="training steps (default: the teacher's train.max_steps)")
    lr: PositiveFloat | None = Field(None, description="learning rate (default: the teacher run's)")


@hookimpl
def corekit_register_components(registry):
    registry.add("compressor", QuantizeParams, "corekit_plugins.compressors.quantize:build")
    registry.add("compressor", PruneParams, "corekit_plugins.compressors.prune:build")
    registry.add("compressor", DistillParams, "corekit_plugins.compressors.distill:build")
