"""``corekit plugins``: list every loaded component."""

from __future__ import annotations

import json
from typing import Optional

import typer

from corekit.errors import CorekitError


def plugins(
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help="only this kind (e.g. attention, norm)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """List plugins: kind, name, source package and version, and what each does."""
    from corekit.plugins import get_registry
    from corekit.registry import KINDS, unknown_message

    if kind is not None and kind not in KINDS:
        raise CorekitError(unknown_message("kind", kind, list(KINDS)))
    rows = [
        {
            "kind": c.kind,
            "name": c.name,
            "package": c.source.package,
            "version": c.source.version,
            "module": c.source.module,
            "description": c.description,
        }
        for c in get_registry().components(kind)
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} components", title_justify="left")
    for column in ("kind", "name", "package", "version", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["kind"], row["name"], row["package"], row["version"], row["description"])
    Console().print(table)
