"""How a trained mixture-of-experts run routes its tokens: a stage and a command.

- stage ``experts`` (section ``[experts]``): after training, ``corekit run`` scores the run's
  validation windows and writes ``experts.json``: for each layer, the share of routing weight
  each expert received. It is skipped when ``experts.json`` belongs to the same weights.
- command ``corekit experts RUN``: the same figures for any trained run, as a table.

A router that sends nearly everything to one expert wastes the others; this is the first thing
to look at after training a mixture of experts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from corekit.params import StageParams
from corekit.stage import RunContext, Stage

REPORT = "experts.json"


class ExpertsSpec(BaseModel):
    """The ``[experts]`` section: score the routing of a trained mixture of experts."""

    model_config = ConfigDict(extra="forbid")
    windows: PositiveInt = Field(16, description="validation windows routed")


class ExpertsStageParams(StageParams):
    """Writes experts.json: the share of routing weight each expert of each layer gets; owns [experts]."""

    name: Literal["experts"] = "experts"


def expert_load(run_dir: str | Path, windows: int, registry=None) -> dict[str, Any]:
    """Route ``windows`` validation windows of the trained run ``run_dir`` and return, per layer,
    each expert's share of the routing weight (each layer's shares sum to 1)."""
    import torch

    from corekit.data.windows import ShardSet, ValWindows
    from corekit.errors import CorekitError
    from corekit.io import file_sha256
    from corekit.run import Run
    from corekit_example_plugin.modules import MixtureOfExperts

    run = Run.open(run_dir, registry)
    model = run.model().eval()
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, MixtureOfExperts)]
    if not layers:
        raise CorekitError(
            f"{run.path} has no mixture-of-experts blocks (model.mlp.name = {run.spec.model.mlp.name!r})"
        )
    if not run.has_data():
        raise CorekitError(f"{run.data} holds no prepared data; run `corekit data prepare` first")
    totals = {name: torch.zeros(len(m.up)) for name, m in layers}

    def count(name: str):
        def hook(moe, args) -> None:  # the block's input, routed once more on the side (returns None: input kept)
            totals[name].add_(moe.gates(args[0]).flatten(0, 1).sum(0))
        return hook

    handles = [m.register_forward_pre_hook(count(name)) for name, m in layers]
    try:
        with torch.no_grad():
            for inputs, _ in torch.utils.data.DataLoader(
                    ValWindows(ShardSet(run.data, "val"), run.spec.model.context_length, windows), batch_size=8):
                model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {"weights_sha256": file_sha256(run.weights), "windows": windows,
            "layers": {name: (t / t.sum()).tolist() for name, t in totals.items()}}


def print_load(report: dict[str, Any], console) -> None:
    from rich.table import Table

    n = max(len(shares) for shares in report["layers"].values())
    table = Table(title=f"share of routing weight per expert ({report['windows']} windows)", title_justify="left")
    table.add_column("layer")
    for e in range(n):
        table.add_column(f"expert {e}", justify="right")
    for name, shares in report["layers"].items():
        table.add_row(name, *(f"{s:.1%}" for s in shares))
    console.print(table)


class ExpertsStage(Stage):
    name = "experts"
    section = "experts"
    order = 45  # after evaluate (40), before compress (50)

    def section_field(self) -> tuple[Any, Any]:
        return ExpertsSpec | None, Field(None, description="score the routing of a mixture of experts after training")

    def wanted(self, spec: Any) -> bool:
        return getattr(spec, "experts", None) is not None

    def current(self, ctx: RunContext) -> bool:
        from corekit.io import file_sha256

        try:
            report = json.loads((ctx.run.path / REPORT).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        weights = ctx.run.path / "model.safetensors"
        return (isinstance(report, dict) and weights.is_file() and report.get("windows") == ctx.spec.experts.windows
                and report.get("weights_sha256") == file_sha256(weights))

    def skipped(self, ctx: RunContext) -> None:
        ctx.console.print(f"[bold]experts[/]: {ctx.run.path / REPORT} is current; skipped")

    def run(self, ctx: RunContext) -> None:
        from corekit.io import atomic_write_text

        ctx.console.print(f"[bold]experts[/] -> {ctx.run.path / REPORT}")
        report = expert_load(ctx.run.path, ctx.spec.experts.windows, ctx.registry)
        atomic_write_text(ctx.run.path / REPORT, json.dumps(report, indent=2) + "\n")
        print_load(report, ctx.out)


def build_stage(params: ExpertsStageParams) -> ExpertsStage:
    return ExpertsStage(params)


def experts_command(run_dir: Path, windows: int = 16) -> None:
    """Show how a trained mixture-of-experts run routes its validation tokens."""
    from rich.console import Console

    print_load(expert_load(run_dir, windows), Console())
