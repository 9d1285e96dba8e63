"""The built-in stages of a run, in ``corekit run`` order: ``tokenizer``, ``data``, ``train``,
``evaluate``, ``compress``, ``export``; and ``finetune``, which owns ``[finetune]`` and runs as
``corekit finetune`` (it makes a new run from a trained one).

Each stage owns its spec section (see :mod:`corekit.stage`); the stage classes live in
:mod:`corekit_plugins.stages.builtin` and import torch only when they run.
"""

from __future__ import annotations

from typing import Literal

from corekit import hookimpl
from corekit.params import StageParams

BUILD = "corekit_plugins.stages.builtin:"


class TokenizerStageParams(StageParams):
    """Trains the spec's tokenizer on the train split (or keeps the run's); owns [tokenizer]."""

    name: Literal["tokenizer"] = "tokenizer"


class DataStageParams(StageParams):
    """Cleans the corpus and writes the token shards; owns [data]."""

    name: Literal["data"] = "data"


class TrainStageParams(StageParams):
    """Trains the model with Lightning (resuming from the last checkpoint); owns [train]."""

    name: Literal["train"] = "train"


class EvaluateStageParams(StageParams):
    """Prints validation loss before and after training, and samples from the trained model."""

    name: Literal["evaluate"] = "evaluate"


class CompressStageParams(StageParams):
    """Applies the spec's compressors in order, each into RUN/compress/; owns [compress]."""

    name: Literal["compress"] = "compress"


class ExportStageParams(StageParams):
    """Exports the (compressed) model to an ONNX bundle in RUN/export; owns [export]."""

    name: Literal["export"] = "export"


class FinetuneStageParams(StageParams):
    """Fine-tunes a trained run into a new one (corekit finetune); owns [finetune]."""

    name: Literal["finetune"] = "finetune"


@hookimpl
def corekit_register_components(registry):
    for params, stage in [(TokenizerStageParams, "TokenizerStage"), (DataStageParams, "DataStage"),
                          (TrainStageParams, "TrainStage"), (EvaluateStageParams, "EvaluateStage"),
                          (CompressStageParams, "CompressStage"), (ExportStageParams, "ExportStage"),
                          (FinetuneStageParams, "FinetuneStage")]:
        registry.add("stage", params, BUILD + stage)
