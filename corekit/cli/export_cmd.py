"""``corekit export onnx``: a trained run -> an ONNX edge bundle (see :mod:`corekit.export.bundle`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

# no rich markup: help texts may name spec sections in brackets ([export]), which rich would eat
app = typer.Typer(help="Export a trained run for other runtimes.", no_args_is_help=True, rich_markup_mode=None)

QUANTIZE_CHOICES = ("none", "int8")


@app.command("onnx")
def onnx(
    run_dir: Path = typer.Argument(..., help="a trained run directory"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="the bundle directory (default: RUN/export)"),
    quantize: str = typer.Option("none", "--quantize", help="none | int8 (onnxruntime's int8 weight quantization)"),
    opset: Optional[int] = typer.Option(None, "--opset", min=18, help="ONNX opset (default: the exporter's)"),
) -> None:
    """Export the run's model with its KV cache to ONNX, check it in onnxruntime against
    PyTorch, and write a bundle (model.onnx, tokenizer.json, corekit-export.json) that
    `corekit-edge` runs without torch."""
    from corekit.errors import CorekitError
    from corekit.export.report import export_and_report

    if quantize not in QUANTIZE_CHOICES:
        raise CorekitError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {quantize!r}")
    export_and_report(run_dir, out or run_dir / "export", quantize=quantize, opset=opset)
