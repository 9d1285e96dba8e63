"""``metrics.csv`` and ``curves.png`` of a run.

Lightning's CSVLogger writes one ``logs/version_N/metrics.csv`` per training session (it
deletes an existing file when it starts, so sessions must not share one). After every
validation they are merged into the run's ``metrics.csv``, sessions in order (a resumed
session's rows for a step replace the earlier ones), and ``curves.png`` is redrawn: training
and validation loss and validation perplexity over steps, resumed runs included."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import lightning as L

from corekit.io import atomic_write_bytes


def read_metrics(path: Path) -> dict[str, dict[int, float]]:
    """metric -> {step: value} from a Lightning CSVLogger file (a later row for a step wins)."""
    series: dict[str, dict[int, float]] = {}
    if not path.is_file():
        return series
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(row["step"])
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series.setdefault(key, {})[step] = float(value)
    return series


def merge_sessions(run_path: Path) -> Path:
    """Write ``run_path/metrics.csv`` from every session's log, in session order (atomically)."""
    versions = sorted((run_path / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    fields: list[str] = []
    rows: list[dict[str, str]] = []
    for path in versions:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            fields += [f for f in reader.fieldnames or [] if f not in fields]
            rows += list(reader)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_bytes(run_path / "metrics.csv", out.getvalue().encode())


def plot_curves(metrics_csv: Path, out: Path) -> Path | None:
    """Draw the loss curves of ``metrics_csv`` into ``out`` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metrics(metrics_csv)
    if not series.get("train_loss") and not series.get("val_loss"):
        return None
    fig, loss_ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for key, style in (("train_loss", {"alpha": 0.6, "lw": 1}), ("val_loss", {"marker": "o", "lw": 2})):
        points = sorted(series.get(key, {}).items())
        if points:
            loss_ax.plot([s for s, _ in points], [v for _, v in points], label=key.replace("_", " "), **style)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss (nats per token)")
    loss_ax.grid(alpha=0.3)
    ppl = sorted(series.get("val_ppl", {}).items())
    if ppl:
        ppl_ax = loss_ax.twinx()
        ppl_ax.plot([s for s, _ in ppl], [v for _, v in ppl], color="tab:red", ls="--", label="val perplexity")
        ppl_ax.set_ylabel("val perplexity")
        if max(v for _, v in ppl) / max(min(v for _, v in ppl), 1e-9) > 20:
            ppl_ax.set_yscale("log")
        handles = loss_ax.get_legend_handles_labels()[0] + ppl_ax.get_legend_handles_labels()[0]
        loss_ax.legend(handles=handles, loc="upper right")
        last = ppl[-1][1]
        loss_ax.set_title(f"step {ppl[-1][0]}: val loss {math.log(last):.3f}, perplexity {last:.2f}")
    else:
        loss_ax.legend(loc="upper right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(out, buffer.getvalue())


class CurvesCallback(L.Callback):
    """Redraws ``curves.png`` after each validation."""

    def __init__(self, run_path: Path) -> None:
        self.run_path = run_path

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        refresh(trainer, self.run_path)


def refresh(trainer: L.Trainer, run_path: Path) -> None:
    """Flush this session's log, then rewrite the run's ``metrics.csv`` and ``curves.png``."""
    if trainer.logger is not None:
        trainer.logger.save()
    plot_curves(merge_sessions(run_path), run_path / "curves.png")
