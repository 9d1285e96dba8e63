"""A run directory, opened: the one place that answers "what model does this run hold".

A run directory (see :mod:`corekit.rundir` for its layout) holds the resolved ``spec.toml``,
``tokenizer.json`` and, once trained, ``model.safetensors``. :class:`Run` reads them back:
the spec, the trained tokenizer, and the model with the structure its saved weights have.
That structure is :func:`corekit.assemble.build_model` of the spec, then every change a
later stage made to it, in order (:func:`build_run_model`): each compressor listed under
``compressed`` restores what it changed (quantized layers, pruned shapes), and a fine-tuned
run gets its classification head and its unmerged adapter back. Every command that acts on
a finished run (generate, eval, export, compress, finetune, classify, chat) opens it here.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from corekit.errors import CorekitError
from corekit.rundir import RunDir

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from corekit.registry import Registry
    from corekit.spec import RunSpec
    from corekit.tokenizer import Tokenizer

#: the trained weights of a run
WEIGHTS = "model.safetensors"
#: a run fine-tuned with an unmerged adapter keeps the adapter's tensors here, beside the base weights
ADAPTER_FILE = "adapter.safetensors"


def _registry(registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from corekit.plugins import get_registry

    return get_registry()


class Run:
    """One run directory with its validated spec: its tokenizer and its model on demand.

    Open a finished run with :meth:`open`; ``Run(run_dir, spec)`` is the run a spec trains into
    (which may not be trained yet: its model is then randomly initialised).
    """

    def __init__(self, path: str | Path | RunDir, spec: RunSpec, registry: Registry | None = None) -> None:
        self.dir = path if isinstance(path, RunDir) else RunDir(Path(path))
        self.spec = spec
        self.registry = _registry(registry)

    @classmethod
    def open(
        cls, path: str | Path, registry: Registry | None = None, *, trained: bool = True, overrides: Iterable[str] = ()
    ) -> Run:
        """Open the run directory ``path``.

        Args:
            trained: require its weights (``model.safetensors``) as well as its spec.
            overrides: ``--set`` items applied to its spec.

        Raises:
            CorekitError: ``path`` is not a (trained) run; SpecError: its spec no longer validates.
        """
        from corekit.spec import load_spec

        run_dir = RunDir(Path(path))
        missing = [p.name for p in (run_dir.spec, run_dir.path / WEIGHTS)[: 2 if trained else 1] if not p.is_file()]
        if missing:
            what = "a trained run" if trained else "a run directory"
            raise CorekitError(
                f"{run_dir.path} is not {what}: {' and '.join(missing)} missing. Train a spec into it first "
                "(corekit train SPEC --run-dir DIR, or corekit run SPEC)"
            )
        registry = _registry(registry)
        return cls(run_dir, load_spec(run_dir.spec, overrides, registry), registry)

    # ----------------------------------------------------------------- files
    @property
    def path(self) -> Path:
        return self.dir.path

    @property
    def weights(self) -> Path:
        """The trained weights file (which may not exist yet)."""
        return self.path / WEIGHTS

    @property
    def data(self) -> Path:
        """The run's token shards."""
        return self.dir.data

    @property
    def trained(self) -> bool:
        return self.weights.is_file()

    def has_data(self) -> bool:
        """Whether the run's token shards are prepared."""
        return (self.data / "manifest.json").is_file()

    # ----------------------------------------------------------------- contents
    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The run's tokenizer: its trained ``tokenizer.json``, or, for a tokenizer that needs no
        training, the spec's own (with its added tokens)."""
        from corekit.assemble import build_tokenizer

        blank = build_tokenizer(self.spec, self.registry)
        if self.dir.tokenizer.is_file():
            return blank.load(self.dir.tokenizer)
        if blank.needs_training:
            raise CorekitError(
                f"the {self.spec.tokenizer.name} tokenizer must be trained first and {self.dir.tokenizer} does not "
                f"exist; run `corekit tokenizer train SPEC --run-dir {self.path}`"
            )
        return blank

    def model(self, *, seed: int | None = None) -> nn.Module:
        """The run's model with its weights, in training mode; an untrained run's model is built
        with random weights, seeded with ``seed`` (default: the spec's ``train.seed``). A spec that
        leaves ``model.vocab_size`` to a trained tokenizer gets it from :attr:`tokenizer`."""
        m = self.spec.model
        if m.vocab_size is None:
            from corekit.spec import padded_vocab

            m.vocab_size = padded_vocab(self.tokenizer.vocab_size, m.pad_vocab_multiple)
        if self.trained:
            return load_run_model(self.spec, self.weights, self.registry)
        import torch

        torch.manual_seed(self.spec.train.seed if seed is None else seed)
        return build_run_model(self.spec, self.registry)

    def plain_model(self) -> nn.Module:
        """The model with an unmerged adapter folded into its weights (what export and compressors
        work on); its spec is :attr:`plain_spec`."""
        return load_plain_model(self.spec, self.weights, self.registry)

    @property
    def plain_spec(self) -> RunSpec:
        """The spec as it reads once an unmerged adapter is folded into the weights."""
        return plain_spec(self.spec)

    @property
    def is_classifier(self) -> bool:
        """Whether the model's head gives class logits (a run fine-tuned with task = 'classify')."""
        ft = self.spec.finetune
        return ft is not None and ft.task == "classify"


# --------------------------------------------------------------------------- model structure
def build_run_model(spec: RunSpec, registry: Registry | None = None) -> nn.Module:
    """The model of a run spec with the structure its saved weights have: ``build_model``, then
    each compressor listed under ``compressed`` restores its changes (quantized layers, say),
    then a fine-tuned run's classification head and (unmerged) adapter."""
    from corekit.assemble import build_model

    reg = _registry(registry)
    model = build_model(spec, reg)
    for params in spec.compressed:
        model = reg.build("compressor", params).restore(model)
    ft = spec.finetune
    if ft is not None and ft.task == "classify" and ft.labels:
        from corekit.finetune.model import attach_classifier

        attach_classifier(model, len(ft.labels))
    if unmerged_adapter(spec):
        reg.build("adapter", ft.adapter).apply(model)
        model.requires_grad_(True)  # a loaded model is a plain module; fine-tuning sets what trains
    return model


def unmerged_adapter(spec: RunSpec) -> bool:
    """Whether the run's weights come as base weights plus a separate adapter file."""
    ft = spec.finetune
    return ft is not None and ft.adapter is not None and not ft.merged


def load_run_model(spec: RunSpec, weights: str | Path, registry: Registry | None = None) -> nn.Module:
    """:func:`build_run_model` with the weights file ``weights`` loaded into it (and, for a run
    fine-tuned with an unmerged adapter, the adapter file beside it)."""
    from corekit.weights import load_weights

    extra: list[Path] = []
    ignore: tuple[str, ...] = ()
    if unmerged_adapter(spec):
        extra = [Path(weights).parent / ADAPTER_FILE]
        ignore = ("lm_head.weight",) if spec.finetune.task == "classify" else ()  # the base's, replaced
    return load_weights(build_run_model(spec, registry), weights, *extra, ignore=ignore)


def plain_spec(spec: RunSpec) -> RunSpec:
    """``spec`` as it reads once an unmerged adapter is folded into the weights (itself otherwise)."""
    if not unmerged_adapter(spec):
        return spec
    return spec.model_copy(update={"finetune": spec.finetune.model_copy(update={"merged": True})})


def load_plain_model(spec: RunSpec, weights: str | Path, registry: Registry | None = None) -> nn.Module:
    """:func:`load_run_model`, with an unmerged adapter folded into the weights: the plain model
    export and compressors work on (its spec is :func:`plain_spec`)."""
    reg = _registry(registry)
    model = load_run_model(spec, weights, reg)
    if unmerged_adapter(spec):
        model = reg.build("adapter", spec.finetune.adapter).merge(model)
    return model
