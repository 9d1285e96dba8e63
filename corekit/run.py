"""A run directory, opened: the one place that answers "what model does this run hold".

A run directory (see :mod:`corekit.rundir` for its layout) holds the resolved ``spec.toml``,
``tokenizer.json`` and, once trained, ``model.safetensors``. :class:`Run` reads them back:
the spec, the trained tokenizer, and the model with the structure its saved weights have.
That structure is :func:`corekit.assemble.build_model` of the spec, then every entry of the
spec's ``changes`` list, in order (:func:`build_run_model`): the component that made each
change restores it (a compressor its quantized layers, a head its classifier, an adapter its
low-rank updates; see :mod:`corekit.change`). Every command that acts on a finished run
(generate, eval, export, compress, finetune, classify, chat) opens it here.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, cast

from corekit.errors import CorekitError
from corekit.rundir import RunDir

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from corekit.change import ModelChange
    from corekit.params import HeadParams
    from corekit.registry import Registry
    from corekit.spec import RunSpec
    from corekit.tokenizer import Tokenizer

#: the trained weights of a run
WEIGHTS = "model.safetensors"


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
            return self.dir.load_tokenizer(blank)
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

    def changes(self) -> list[ModelChange]:
        """The components of the spec's ``changes``, built, in order."""
        return built_changes(self.spec, self.registry)

    def plain_model(self) -> nn.Module:
        """The model with every foldable change (an adapter kept apart) folded into its weights: what
        export and compressors work on; its spec is :attr:`plain_spec`."""
        return load_plain_model(self.spec, self.weights, self.registry)

    @property
    def plain_spec(self) -> RunSpec:
        """The spec as it reads once the foldable changes are folded into the weights."""
        return plain_spec(self.spec, self.registry)

    @property
    def is_plain(self) -> bool:
        """Whether ``model.safetensors`` alone holds the model's weights (no foldable change whose
        tensors live in a file of their own)."""
        return self.plain_spec is self.spec

    @property
    def head(self) -> HeadParams | None:
        """The parameters of the head that replaced the LM head (labels, pooling), if any: such a
        model scores classes and cannot generate text."""
        heads = self.spec.change_params("head")
        return cast("HeadParams", heads[-1]) if heads else None


# --------------------------------------------------------------------------- model structure
def built_changes(spec: RunSpec, registry: Registry | None = None) -> list[ModelChange]:
    """The components of ``spec.changes``, built, in order."""
    from corekit.spec import change_kind

    reg = _registry(registry)
    return [reg.build(*change_kind(change)) for change in spec.changes]


def build_run_model(spec: RunSpec, registry: Registry | None = None,
                    changes: list[ModelChange] | None = None) -> nn.Module:
    """The model of a run spec with the structure its saved weights have: ``build_model``, then
    each entry of ``changes``, restored by the component that made it, in order (``changes``:
    those components already built)."""
    from corekit.assemble import build_model

    reg = _registry(registry)
    model = build_model(spec, reg)
    for change in built_changes(spec, reg) if changes is None else changes:
        model = change.restore(model)
    return model


def load_run_model(spec: RunSpec, weights: str | Path, registry: Registry | None = None) -> nn.Module:
    """:func:`build_run_model` with the weights file ``weights`` loaded into it, then the files of
    changes that keep their tensors apart (an adapter's), from the same directory."""
    from corekit.weights import load_weights

    changes = built_changes(spec, registry)
    extra = [Path(weights).parent / c.weights_file for c in changes if c.foldable and c.weights_file]
    drops = tuple(key for c in changes for key in c.drops)
    return load_weights(build_run_model(spec, registry, changes), weights, *extra, ignore=drops)


def plain_spec(spec: RunSpec, registry: Registry | None = None) -> RunSpec:
    """``spec`` without its foldable changes (itself when it has none): the spec of the model
    :func:`load_plain_model` gives."""
    kept = [entry for entry, change in zip(spec.changes, built_changes(spec, registry)) if not change.foldable]
    if len(kept) == len(spec.changes):
        return spec
    return spec.model_copy(update={"changes": kept})


def load_plain_model(spec: RunSpec, weights: str | Path, registry: Registry | None = None) -> nn.Module:
    """:func:`load_run_model`, with every foldable change folded into the weights, the last one
    first: the plain model export and compressors work on (its spec is :func:`plain_spec`)."""
    model = load_run_model(spec, weights, registry)
    for change in reversed(built_changes(spec, registry)):
        if change.foldable:
            model = change.fold(model)
    return model
