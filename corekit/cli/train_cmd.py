"""``corekit train``: train a spec's model (tokenizer and data stages first)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def train(
    spec_file: Path = typer.Argument(..., help="a run spec"),
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", help="the run directory (default: runs/<spec file stem>)"
    ),
    set_: List[str] = typer.Option([], "--set", help="override a spec field, e.g. --set train.max_steps=50"),
    resume: bool = typer.Option(False, "--resume", help="continue from the run's last checkpoint"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1, help="tokenizer processes for data prepare"),
) -> None:
    """Train the spec's model with Lightning; writes checkpoints, metrics.csv and model.safetensors."""
    from corekit.plugins import get_registry
    from corekit.rundir import RunDir
    from corekit.spec import load_spec
    from corekit.train.fit import train as run_training
    from corekit.train.evaluate import perplexity

    registry = get_registry()
    spec = load_spec(spec_file, set_, registry)
    run = RunDir.for_spec(spec_file, run_dir)
    result = run_training(spec, run, registry, resume=resume, workers=workers)
    loss = result.metrics.get("val_loss")
    summary = f"trained {result.steps} steps -> {result.weights}"
    if loss is not None:
        summary += f"; val loss {loss:.4f}, perplexity {perplexity(loss):.2f}"
    typer.echo(summary)
