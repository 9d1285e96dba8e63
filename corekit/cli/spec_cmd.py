"""``corekit spec``: validate, show and describe run specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

# no rich markup: help texts name spec sections in brackets ([export]), which rich would eat
app = typer.Typer(help="Validate, show and describe run specs.", no_args_is_help=True, rich_markup_mode=None)

SET_HELP = "override a field, e.g. --set model.d_model=512 (repeatable)"


@app.command()
def validate(
    file: Path = typer.Argument(..., help="a .toml or .json run spec"),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Check a spec; exit 0 if valid, else exit 2 listing every error with its field path. A
    fine-tuning spec ([finetune], no [model]) is checked against its base run."""
    from corekit.spec import load_spec, read_spec_file

    data = read_spec_file(file)
    if "finetune" in data and "model" not in data:
        from corekit.finetune.run import load_finetune_spec

        spec, base, _ = load_finetune_spec(file, set_)
        ft = spec.finetune
        typer.echo(f"{file}: valid ({ft.task} fine-tuning of {base.path}, "
                   f"{ft.adapter.name + ' adapter' if ft.adapter else 'full'})")
        return
    spec = load_spec(file, set_)
    m = spec.model
    typer.echo(
        f"{file}: valid ({m.n_layers} layers, d_model {m.d_model}, {m.attention.name} attention, "
        f"{m.norm.name}, {m.mlp.activation.name}, {m.position.name} positions)"
    )


@app.command()
def schema(
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="write to this file instead of stdout"),
) -> None:
    """Print the JSON Schema of a run spec, covering every installed plugin."""
    from corekit.io import atomic_write_text
    from corekit.plugins import get_registry
    from corekit.spec import spec_schema

    text = json.dumps(spec_schema(get_registry()), indent=2)
    if out is None:
        typer.echo(text)
    else:
        atomic_write_text(out, text + "\n")
        typer.echo(f"wrote {out}")


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict) and data:
        rows: list[tuple[str, Any]] = []
        for key, value in data.items():
            rows += _flatten(value, f"{prefix}.{key}" if prefix else key)
        return rows
    return [(prefix, data)]


def _given(raw: Any, path: str) -> bool:
    node = raw
    for part in path.split("."):
        if isinstance(node, str) and part == "name":
            return True
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@app.command()
def show(
    file: Path = typer.Argument(..., help="a .toml or .json run spec"),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Show the resolved spec (defaults filled in), parameter count and FLOPs per token."""
    from rich.console import Console
    from rich.table import Table

    from corekit.spec import apply_overrides, load_spec, read_spec_file, spec_to_dict
    from corekit.stats import model_size

    spec = load_spec(file, set_)
    raw = apply_overrides(read_spec_file(file), set_)
    table = Table(title=f"{file} (resolved; dim = default)", title_justify="left")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for path, value in _flatten(spec_to_dict(spec)):
        style = None if _given(raw, path) else "dim"
        table.add_row(path, json.dumps(value), style=style)
    size = model_size(spec.model)  # counted before printing: an impossible model prints only its error
    console = Console()
    console.print(table)
    summary = Table(show_header=False, title="size", title_justify="left")
    summary.add_row("parameters", f"{size.parameters:,}")
    summary.add_row("  without token embeddings", f"{size.parameters - size.embedding:,}")
    summary.add_row(f"forward FLOPs per token (T={spec.model.context_length})", f"{size.flops_per_token:,}")
    console.print(summary)
