"""``corekit compress``: a trained run -> a compressed run (see :mod:`corekit.compress.run`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def compress(
    run_dir: Path = typer.Argument(..., help="a trained run directory"),
    with_: str = typer.Option(..., "--with", help="the compressor: quantize | prune | distill | <plugin>"),
    set_: List[str] = typer.Option([], "--set", help="a compressor parameter, e.g. --set bits=4 (repeatable)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="the new run directory (default: RUN-NAME)"),
    speed: bool = typer.Option(True, "--speed/--no-speed", help="time CPU decoding before and after"),
) -> None:
    """Compress a trained run into a new run directory (same layout: eval, generate, export and
    further compressors take it) and report parameters, weight size, validation perplexity and
    CPU decode tokens/s before and after (also in NEWRUN/compress-report.json)."""
    from corekit.compress.report import compress_and_report
    from corekit.compress.run import compressor_params
    from corekit.plugins import get_registry

    registry = get_registry()
    params = compressor_params(with_, set_, registry)
    source = run_dir.resolve()
    target = out or source.with_name(f"{source.name}-{with_}")
    compress_and_report(run_dir, params, target, registry, speed=speed)
