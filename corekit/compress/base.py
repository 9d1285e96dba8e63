"""What a compressor plugin implements, and what it is handed.

A compressor component's ``build(params)`` returns a :class:`Compressor`. ``corekit compress``
(see :mod:`corekit.compress.run`) calls :meth:`Compressor.check` before anything is written,
then :meth:`Compressor.compress`, and writes the model it returns as a new run directory
whose ``spec.toml`` adds the compressor to its ``changes`` (``{compressor = {...}}``). Loading
that run later builds the spec's model and calls :meth:`Compressor.restore` for each change
listed, so the modules have the structure the saved weights need (e.g. quantized layers)
before loading (see :mod:`corekit.change`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from corekit.change import ModelChange

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from corekit.params import Params
    from corekit.registry import Registry
    from corekit.run import Run
    from corekit.rundir import RunDir
    from corekit.spec import RunSpec
    from corekit.tokenizer import Tokenizer


@dataclass
class SourceRun:
    """The trained run a compressor reads: its spec, tokenizer, data and weights."""

    run: RunDir
    spec: RunSpec
    registry: Registry
    tokenizer: Tokenizer
    #: the spec the saved files were written with, when ``spec`` differs (an adapter to fold in)
    stored_spec: RunSpec | None = None

    @classmethod
    def of(cls, run: Run) -> SourceRun:
        """The opened run ``run`` as compressors see it: a run fine-tuned with an unmerged adapter
        stands for the plain model it makes, with the adapter folded in."""
        return cls(run.dir, run.plain_spec, run.registry, run.tokenizer, stored_spec=run.spec)

    @property
    def weights(self) -> Path:
        return self.run.path / "model.safetensors"

    @property
    def data(self) -> Path:
        return self.run.data

    def has_data(self) -> bool:
        """Whether the run's token shards are prepared (calibration, recovery, distillation)."""
        return (self.run.data / "manifest.json").is_file()

    def load_model(self) -> nn.Module:
        """A fresh copy of the run's model with its weights, in eval mode (compressors may change it)."""
        from corekit.run import Run

        return Run(self.run, self.stored_spec or self.spec, self.registry).plain_model().eval()

    def is_quantized(self) -> bool:
        """Whether an earlier compressor left integer weights (nothing trains those)."""
        return any(getattr(c, "quantizes", False) for c in self.compressors())

    def compressors(self) -> list[Compressor]:
        """The compressors already applied to this run, in order."""
        return [self.registry.build("compressor", params) for params in self.spec.change_params("compressor")]


@dataclass
class Compressed:
    """What :meth:`Compressor.compress` returns."""

    model: nn.Module
    spec: RunSpec  # the new run's spec: the model section changes when the shape does
    details: dict[str, Any] = field(default_factory=dict)  # figures for compress-report.json


class Compressor(ModelChange, ABC):
    """Acts on a trained run and returns a smaller or faster model."""

    #: whether this compressor leaves integer weights that later stages cannot train
    quantizes: bool = False
    #: whether it returns a new model (a distilled student) rather than a changed copy of the
    #: run's: the new run's ``changes`` list then starts afresh, since earlier changes'
    #: ``restore`` does not apply to it
    new_model: bool = False
    #: whether it works on a model whose LM head a ``head`` change replaced (a classifier); the
    #: default check refuses such runs otherwise
    takes_heads: bool = False

    def __init__(self, params: Params) -> None:
        self.params = params

    def check(self, source: SourceRun) -> None:
        """Raise :class:`corekit.errors.CorekitError` if ``source`` cannot be compressed this way.

        Called before anything is written; the default refuses quantized runs, since the
        integer weights of a quantized run cannot be trained or pruned further.
        """
        from corekit.errors import CorekitError

        heads = source.spec.change_params("head")
        if heads and not self.takes_heads:
            raise CorekitError(
                f"{source.run.path} is a classifier (its LM head was replaced by a {heads[-1].name} head), which "
                f"{self.params.name} cannot compress: it works on language models. Quantization works on "
                "classifiers (--with quantize), or compress the language model before fine-tuning it"
            )
        if source.is_quantized():
            raise CorekitError(
                f"{source.run.path} is already quantized "
                f"({', '.join(c.name for c in source.spec.change_params('compressor'))}); "
                f"{self.params.name} needs float weights. Apply {self.params.name} first and quantize last"
            )

    @abstractmethod
    def compress(self, source: SourceRun, work_dir: Path, progress: Callable[[str], None]) -> Compressed:
        """Compress ``source``'s model. ``work_dir`` is an empty scratch directory (checkpoints of
        a recovery run, say), deleted afterwards; ``progress`` takes one-line status messages."""

    def restore(self, model: nn.Module) -> nn.Module:
        """Give a freshly built model of the compressed spec the structure the saved weights
        need (called before loading them); the default changes nothing."""
        return model
