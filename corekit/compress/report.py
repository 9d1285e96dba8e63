"""The compression report on a console: progress on stderr, then the before/after table.

Used by ``corekit compress`` and by the compress stage of ``corekit run``.
"""

from __future__ import annotations

from pathlib import Path


def compress_and_report(run_dir: Path, params, out: Path, registry, *, speed: bool = True) -> dict:
    """Run one compressor with progress on stderr and print the before/after table."""
    from rich.console import Console

    from corekit.compress.run import compress_run

    err = Console(stderr=True, highlight=False)
    err.print(f"[bold]compress[/] {run_dir} with {params.name} -> {out}")
    report = compress_run(run_dir, params, out, registry=registry, measure_speed=speed,
                          progress=lambda message: err.print(f"  {message}", markup=False))
    Console().print(report_table(report))
    return report


def report_table(report: dict):
    """The before/after figures of a compress report as a rich table."""
    from rich.table import Table

    before, after = report["before"], report["after"]
    table = Table(title=f"{report['compressor']['name']}: {report['source']['run']} -> {report['out']}",
                  title_justify="left")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("after / before", justify="right")
    rows = [("parameters", "parameters", "{:,}"), ("non-zero parameters", "nonzero_parameters", "{:,}"),
            ("weight file", "weight_bytes", "bytes"), ("val perplexity", "val_perplexity", "{:.3f}"),
            ("CPU decode tokens/s", "decode_tokens_per_s", "{:.1f}")]
    for label, key, fmt in rows:
        if key not in before or key not in after:
            continue
        a, b = before[key], after[key]
        show = ((lambda v: f"{v / 2**20:.2f} MiB" if v >= 2**20 else f"{v / 2**10:.1f} KiB")
                if fmt == "bytes" else fmt.format)
        table.add_row(label, show(a), show(b), f"{b / a:.3f}" if a else "")
    if "kl_from_source" in report:
        table.add_row("KL(before || after), nats/token", "", f"{report['kl_from_source']:.2e}", "")
    for key, value in report.get("details", {}).items():
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            table.add_row(f"{key}", "", f"{value:.4g}" if isinstance(value, float) else str(value), "")
    for note in report.get("notes", []):
        table.add_row("note", note, "", "")
    return table
