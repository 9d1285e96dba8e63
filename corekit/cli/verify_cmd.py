"""``corekit verify``: check every artifact of a run directory or an export bundle (see :mod:`corekit.verify`)."""

from __future__ import annotations

from pathlib import Path

import typer


def verify(
    target: Path = typer.Argument(..., help="a run directory or an export bundle"),
) -> None:
    """Check the sha256 of every artifact of a run (weights, tokenizer, checkpoints, token shards and
    the ids in them, its export) or of a bundle; exit 2 if any is damaged."""
    from rich.console import Console
    from rich.table import Table

    from corekit.verify import verify as check

    checks = check(target)
    console = Console(highlight=False)
    table = Table(title=f"{target}", title_justify="left")
    for column in ("file", "what", "state"):
        table.add_column(column)
    for c in checks:
        state = c.problem or (c.note if c.note else "sound")
        shown = str(c.path.relative_to(target)) if c.path.is_relative_to(target) else str(c.path)
        table.add_row(shown, c.what, f"[red]{state}[/]" if c.problem else state)
    console.print(table)
    bad = [c for c in checks if c.problem]
    if bad:
        console.print(f"{len(bad)} of {len(checks)} artifacts are damaged or missing")
        raise typer.Exit(2)
    console.print(f"all {len(checks)} artifacts are sound")
