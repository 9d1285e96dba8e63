"""An export on a console: progress on stderr, then the bundle's figures as a table.

Used by ``corekit export onnx`` and by the export stage of ``corekit run``.
"""

from __future__ import annotations

from pathlib import Path


def export_and_report(run_dir: Path, out: Path, *, quantize: str, opset: int | None = None) -> None:
    """Run the export with progress on stderr and print its figures as a table."""
    from rich.console import Console
    from rich.table import Table

    from corekit.export.bundle import export_run

    err = Console(stderr=True, highlight=False)
    with err.status("exporting") as status:
        report = export_run(run_dir, out, quantize=quantize, opset=opset,
                            progress=lambda message: status.update(message))
    table = Table(title=f"bundle {report.out}", title_justify="left", show_header=False)
    check = report.parity
    table.add_row("fp32 parity (max abs logit diff)",
                  f"{check['max_abs_logit_diff']:.2e} (allowed {check['tolerance']:g}; "
                  f"{len(check['cases'])} shapes, prefill and decode)")
    for name, size in report.sizes.items():
        ppl = report.perplexity.get(name)
        table.add_row(f"{name} model.onnx", f"{size / 2**20:.2f} MiB" + (f", val perplexity {ppl:.3f}" if ppl else ""))
    if len(report.sizes) == 2:
        name = next(k for k in report.sizes if k != "float32")
        table.add_row(f"{name} / float32 size", f"{report.sizes[name] / report.sizes['float32']:.1%}")
    if "stored_integers_max_abs_logit_diff" in check:
        table.add_row("integer graph vs quantized PyTorch", f"{check['stored_integers_max_abs_logit_diff']:.2e}")
    table.add_row("opset", str(report.manifest["opset"]))
    for note in report.notes:
        table.add_row("note", note)
    Console().print(table)
