"""Stages: the steps of a run, as plugins (kind ``stage``).

A run goes through stages (tokenizer, data, train, evaluate, compress, export, ...). Each one
is a registered component whose ``build(params)`` returns a :class:`Stage`: it owns one
top-level section of the run spec (a pydantic type; ``[train]`` for the train stage), says
whether its outputs in a run directory are current, and runs. The run spec is assembled from
the registered stages' sections (:func:`corekit.spec.run_spec_type`), so the core names no
stage and a third-party package adds a stage, with its section, exactly like a built-in one.
``corekit run`` is :func:`run_stages`: every stage the spec asks for, in order, skipping the
ones whose outputs are current.

Stage objects are built when a registry's run spec is first assembled and by ``corekit run``, so
building one must be cheap: import torch and Lightning inside :meth:`Stage.run`, never at module level.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from corekit.registry import Registry
    from corekit.rundir import RunDir


@dataclass
class RunContext:
    """What a stage is handed: the spec, the run directory, the registry, where to print, and what
    earlier stages left for later ones (``results``: the tokenizer, the directory to export, ...)."""

    spec: Any
    run: RunDir
    registry: Registry
    #: progress and stage headers (stderr)
    console: Console
    #: results a person reads (stdout)
    out: Console
    #: tokenizer processes for stages that tokenize (None: all cores)
    workers: int | None = None
    results: dict[str, Any] = field(default_factory=dict)


class Stage(ABC):
    """One step of a run. Subclasses set :attr:`name`, :attr:`section` and :attr:`order`."""

    #: the stage's name, as registered ("train")
    name: ClassVar[str]
    #: the top-level spec key this stage owns (None: it owns no section)
    section: ClassVar[str | None] = None
    #: its place in ``corekit run``: lower runs first (the built-ins use 10, 20, ... 70)
    order: ClassVar[int] = 100

    def __init__(self, params: Any = None) -> None:
        """``params``: the stage's validated Params (its registration; a stage's options live in its
        spec section)."""
        self.params = params

    def section_field(self) -> tuple[Any, Any]:
        """``(type, default)`` of the stage's section in the run spec, as for pydantic's
        ``create_model`` (the default may be a ``Field(...)``). The section model should keep
        ``extra="forbid"``. Only called when :attr:`section` is set."""
        raise NotImplementedError(f"stage {self.name!r} names section {self.section!r} but gives no section_field()")

    def upgrade(self, data: dict[str, Any]) -> dict[str, Any]:
        """Rewrite a spec written by an earlier version of this stage (a run directory's stored
        ``spec.toml``, as plain data) into the current form; called by :func:`corekit.spec.load_spec`
        before validation. The default returns ``data`` unchanged. Return a new dict rather than
        changing ``data``."""
        return data

    def wanted(self, spec: Any) -> bool:
        """Whether ``corekit run`` runs this stage for ``spec`` (default: always)."""
        return True

    def current(self, ctx: RunContext) -> bool:
        """Whether the stage's outputs in ``ctx.run`` exist and match the spec, so that it can be
        skipped (default: never)."""
        return False

    @abstractmethod
    def run(self, ctx: RunContext) -> None:
        """Do the stage's work in ``ctx.run`` (writes atomic, progress on ``ctx.console``)."""

    def skipped(self, ctx: RunContext) -> None:
        """Called instead of :meth:`run` when the stage is current (default: says so)."""
        ctx.console.print(f"[bold]{self.name}[/]: current; skipped")


def stages(registry: Registry) -> list[Stage]:
    """Every registered stage, built, in run order (ties keep registration order)."""
    built = [registry.build("stage", comp.name) for comp in registry.components("stage")]
    return sorted(built, key=lambda stage: stage.order)


def run_stages(ctx: RunContext) -> None:
    """``corekit run``: each stage the spec asks for, in order; a current one is skipped. The run's
    write lock is held throughout (:mod:`corekit.lock`)."""
    from corekit.lock import writing

    with writing(ctx.run.path):
        for stage in stages(ctx.registry):
            if not stage.wanted(ctx.spec):
                continue
            if stage.current(ctx):
                stage.skipped(ctx)
            else:
                stage.run(ctx)
