"""``corekit plugins``: list every loaded component."""

from __future__ import annotations

import json
from typing import Optional

import typer

from corekit.errors import CorekitError


def plugins(
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help="only this kind (e.g. attention, norm)"),
    kinds: bool = typer.Option(False, "--kinds", help="list the component kinds and each one's contract instead"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """List plugins: kind, name, source package and version, and what each does. With --kinds,
    the contract of each kind: its Params base, the exact build call and what it returns."""
    from corekit.kinds import KINDS
    from corekit.registry import unknown_message

    if kind is not None and kind not in KINDS:
        raise CorekitError(unknown_message("kind", kind, list(KINDS)))
    if kinds:
        from corekit.kinds import describe

        rows = [describe(name) for name in KINDS if kind is None or name == kind]
        _show(rows, "kinds", ("kind", "params", "build", "product", "contract"), as_json)
        return
    from corekit.plugins import get_registry

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
    _show(rows, "components", ("kind", "name", "package", "version", "description"), as_json)


def _show(rows: list[dict], what: str, columns: tuple[str, ...], as_json: bool) -> None:
    """``rows`` as JSON, or as a table of ``columns`` titled with their count."""
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(rows)} {what}", title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(row[c]) for c in columns))  # plain text: "[train]" is a section, not markup
    Console().print(table)
