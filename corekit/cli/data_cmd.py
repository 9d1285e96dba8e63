"""``corekit tokenizer train`` and ``corekit data prepare``: the stages before training."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from corekit.assemble import build_tokenizer

# no rich markup: help texts may name spec sections in brackets ([data]), which rich would eat
tokenizer_app = typer.Typer(help="Train and inspect tokenizers.", no_args_is_help=True, rich_markup_mode=None)
data_app = typer.Typer(help="Prepare token shards for training.", no_args_is_help=True, rich_markup_mode=None)

RUN_DIR_HELP = "the run directory (default: runs/<spec file stem>)"
SET_HELP = "override a spec field, e.g. --set data.min_chars=64 (repeatable)"


def _progress():
    """A progress display on stderr, so stdout keeps only results."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
        TextColumn("{task.fields[done]}"), TimeElapsedColumn(),
        console=Console(stderr=True),
    )


def _train_tokenizer(spec, run, registry):
    """The tokenizer stage, with a progress line counting the text it trains on."""
    from corekit.rundir import ensure_tokenizer

    if run.tokenizer.is_file() or not build_tokenizer(spec, registry).needs_training:
        return ensure_tokenizer(spec, run, registry)
    with _progress() as progress:
        task = progress.add_task(f"training {spec.tokenizer.name} tokenizer", total=None, done="")
        seen = {"bytes": 0, "start": time.perf_counter()}

        def on_text(nbytes: int) -> None:
            seen["bytes"] += nbytes
            rate = seen["bytes"] / 1e6 / max(time.perf_counter() - seen["start"], 1e-9)
            progress.update(task, done=f"{seen['bytes'] / 1e6:.1f} MB read, {rate:.1f} MB/s")

        result = ensure_tokenizer(spec, run, registry, on_text)
        progress.update(task, total=1, completed=1)
    return result


def _load(spec_file: Path, set_: list[str], run_dir: Optional[Path]):
    from corekit.plugins import get_registry
    from corekit.rundir import RunDir
    from corekit.spec import load_spec

    registry = get_registry()
    return load_spec(spec_file, set_, registry), RunDir.for_spec(spec_file, run_dir), registry


@tokenizer_app.command("train")
def tokenizer_train(
    spec_file: Path = typer.Argument(..., help="a run spec"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help=RUN_DIR_HELP),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Train the spec's tokenizer on the train split (skipped if the run has one)."""
    spec, run, registry = _load(spec_file, set_, run_dir)
    tokenizer, trained = _train_tokenizer(spec, run, registry)
    verb = "trained" if trained else "kept the existing"
    typer.echo(f"{verb} {spec.tokenizer.name} tokenizer: {tokenizer.vocab_size} ids -> {run.tokenizer}")


def _prepare(spec, run, registry, workers: Optional[int]):
    """The tokenizer (trained if the run has none), then the shards, with a progress display;
    returns ``(PrepareResult, seconds, bytes read)``."""
    from corekit.rundir import prepare_data

    tokenizer, _ = _train_tokenizer(spec, run, registry)
    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("tokenizing", total=None, done="")
        seen = {"docs": 0, "bytes": 0}

        def on_progress(docs: int, nbytes: int) -> None:
            seen["docs"] += docs
            seen["bytes"] += nbytes
            rate = seen["bytes"] / 1e6 / max(time.perf_counter() - start, 1e-9)
            progress.update(task, done=f"{seen['docs']} documents, {rate:.1f} MB/s")

        result = prepare_data(spec, run, tokenizer, workers=workers, on_progress=on_progress)
        progress.update(task, total=1, completed=1)
    return result, time.perf_counter() - start, seen["bytes"]


@data_app.command("prepare")
def data_prepare(
    spec_file: Path = typer.Argument(..., help="a run spec"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help=RUN_DIR_HELP),
    workers: Optional[int] = typer.Option(
        None, "--workers", "-j", min=1, help="tokenizer processes (default: all cores)"
    ),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Train the tokenizer if the run has none, then tokenize the corpus into shards."""
    from rich.console import Console
    from rich.table import Table

    from corekit.errors import CorekitError
    from corekit.lock import writing
    from corekit.tokenizer import EOT

    spec, run, registry = _load(spec_file, set_, run_dir)
    if EOT not in spec.tokenizer.special_tokens:
        raise CorekitError(
            f"tokenizer.special_tokens must include {EOT!r}: it separates documents in the shards "
            f"(got {spec.tokenizer.special_tokens})"
        )
    with writing(run.path):  # one writer from the tokenizer to the last shard
        result, elapsed, nbytes = _prepare(spec, run, registry, workers)
    manifest = result.manifest
    stats = manifest["stats"]
    console = Console()
    for problem in result.repaired:
        console.print(f"[yellow]repaired:[/] {problem}")
    if result.skipped:
        console.print(f"{run.data}: all {result.reused} shards match the manifest; nothing to do")
    table = Table(title=f"{run.data}", title_justify="left", show_header=False)
    table.add_row("documents read", f"{stats['documents_in']:,}")
    table.add_row("  dropped: shorter than min_chars", f"{stats['too_short']:,}")
    table.add_row("  dropped: duplicates", f"{stats['duplicates']:,}")
    table.add_row("documents kept", f"{stats['documents_out']:,}")
    for split in ("train", "val"):
        s = stats[split]
        table.add_row(f"{split}", f"{s['documents']:,} documents, {s['tokens']:,} tokens, {s['shards']} shard(s)")
    table.add_row("dtype", manifest["config"]["dtype"])
    table.add_row("shards built / reused", f"{result.built} / {result.reused}")
    if not result.skipped and nbytes:
        table.add_row("throughput", f"{nbytes / 1e6 / elapsed:.2f} MB/s ({elapsed:.1f} s)")
    console.print(table)
