"""Evaluation metrics for fine-tuned models: classification and generation.

* :func:`classification_metrics` -- accuracy, macro-F1 and the confusion matrix of class
  predictions (torchmetrics' multiclass functions).
* :func:`save_confusion_png` -- a picture of a confusion matrix, written atomically.
* :func:`generation_metrics` -- exact match and ROUGE-L of generated text against references.

torch, torchmetrics and matplotlib are imported inside the functions, so importing this module
is cheap (``torchmetrics.text`` in particular is slow to import).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from corekit.io import atomic_write_bytes

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["classification_metrics", "generation_metrics", "save_confusion_png"]


def _as_class_tensor(values: Sequence[int] | Tensor, what: str, num_classes: int) -> Tensor:
    """``values`` as a 1-D int64 tensor of class indices in ``[0, num_classes)``."""
    import torch

    t = values.detach().cpu() if isinstance(values, torch.Tensor) else torch.as_tensor(list(values))
    if t.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of class indices, got shape {tuple(t.shape)}")
    if t.numel() and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise ValueError(f"{what} must hold integer class indices, got dtype {t.dtype}")
    t = t.to(torch.int64)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
        raise ValueError(f"{what} holds class index {bad}, outside [0, {num_classes}) for the labels given")
    return t


def classification_metrics(
    preds: Sequence[int] | Tensor, targets: Sequence[int] | Tensor, labels: Sequence[str]
) -> dict:
    """Accuracy, macro-F1 and confusion matrix of predicted class indices.

    Class ``i`` is ``labels[i]``. Macro-F1 follows torchmetrics (1.x): the unweighted mean of
    the per-class F1 scores over the classes that occur in ``preds`` or ``targets``; a class
    absent from both (no true positive, false positive or false negative) is left out of the
    mean rather than counted as F1 0 (or 1). A class that occurs only on one side has F1 0
    and is counted.

    Args:
        preds: predicted class indices, one per example.
        targets: true class indices, same length.
        labels: class names; ``num_classes = len(labels)`` (at least 2).

    Returns:
        ``{"accuracy": float, "macro_f1": float, "confusion": list[list[int]], "labels":
        list[str], "count": int}``; ``confusion[t][p]`` counts examples of true class ``t``
        predicted as ``p`` (rows: true label, columns: predicted).

    Raises:
        ValueError: fewer than 2 labels, no examples, lengths differ, or an index out of range.
    """
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_confusion_matrix,
        multiclass_f1_score,
    )

    labels = [str(label) for label in labels]
    num_classes = len(labels)
    if num_classes < 2:
        raise ValueError(f"classification needs at least 2 labels, got {num_classes}")
    p = _as_class_tensor(preds, "preds", num_classes)
    t = _as_class_tensor(targets, "targets", num_classes)
    if p.numel() != t.numel():
        raise ValueError(f"preds and targets differ in length: {p.numel()} != {t.numel()}")
    if p.numel() == 0:
        raise ValueError("no examples: preds and targets are empty")
    accuracy = multiclass_accuracy(p, t, num_classes=num_classes, average="micro")
    macro_f1 = multiclass_f1_score(p, t, num_classes=num_classes, average="macro")
    confusion = multiclass_confusion_matrix(p, t, num_classes=num_classes)  # [true, pred]
    return {
        "accuracy": float(accuracy),
        "macro_f1": float(macro_f1),
        "confusion": [[int(v) for v in row] for row in confusion.tolist()],
        "labels": labels,
        "count": int(p.numel()),
    }


def save_confusion_png(
    confusion: list[list[int]],
    labels: Sequence[str],
    path: str | os.PathLike[str],
    accuracy: float | None = None,
) -> Path:
    """Draw a confusion matrix (counts in the cells) and write it to ``path`` as a PNG.

    Uses :class:`matplotlib.figure.Figure` with the Agg canvas directly (no pyplot state), and
    :func:`corekit.io.atomic_write_bytes`, so an existing file is replaced whole.

    Args:
        confusion: square matrix, ``confusion[true][predicted]``, as from
            :func:`classification_metrics`.
        labels: class names, one per row/column.
        path: where to write the PNG (parent directories are created).
        accuracy: when given, shown in the title.

    Returns:
        The path written.

    Raises:
        ValueError: the matrix is not square or does not match ``labels``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    labels = [str(label) for label in labels]
    n = len(labels)
    rows = [list(row) for row in confusion]
    if len(rows) != n or any(len(row) != n for row in rows):
        raise ValueError(f"confusion must be {n}x{n} to match {n} labels")
    counts = [[int(v) for v in row] for row in rows]

    side = min(max(3.0, 0.6 * n + 2.0), 20.0)
    fig = Figure(figsize=(side + 1.0, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest", vmin=0)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.locator = MaxNLocator(integer=True)
    colorbar.update_ticks()
    ax.set_xticks(range(n), labels=labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    title = "confusion matrix"
    if accuracy is not None:
        title += f" (accuracy {accuracy:.3f})"
    ax.set_title(title)
    top = max((v for row in counts for v in row), default=0)
    for i, row in enumerate(counts):
        for j, value in enumerate(row):
            dark = top > 0 and value > top / 2
            ax.text(j, i, str(value), ha="center", va="center", color="white" if dark else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def generation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Exact match and ROUGE-L of generated texts against one reference each.

    * ``exact_match``: the fraction of pairs with ``prediction.strip() == reference.strip()``
      (case- and punctuation-sensitive).
    * ``rouge_l``: the mean over pairs of the ROUGE-L F-measure from
      ``torchmetrics.text.rouge.ROUGEScore(rouge_keys=("rougeL",))`` with its defaults (no
      stemmer, so no nltk and no downloads): both texts are lowercased, every run of characters
      other than ASCII ``a-z0-9`` becomes a space (so punctuation and non-ASCII letters are
      dropped), the result is split on whitespace, and with ``L`` the length of the longest
      common subsequence of the token lists, ``P = L / len(pred)``, ``R = L / len(ref)``,
      ``F = 2PR / (P + R)``. A prediction or reference with no tokens (e.g. ``""``) scores 0,
      even when both are empty.

    Args:
        predictions: generated texts.
        references: the expected texts, same length.

    Returns:
        ``{"exact_match": float, "rouge_l": float, "count": int}``.

    Raises:
        ValueError: empty lists or lengths that differ.
    """
    predictions = [str(p) for p in predictions]
    references = [str(r) for r in references]
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: {len(predictions)} != {len(references)}"
        )
    if not predictions:
        raise ValueError("no examples: predictions and references are empty")
    from torchmetrics.text.rouge import ROUGEScore

    exact = sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True))
    rouge = ROUGEScore(rouge_keys=("rougeL",))
    # one reference per prediction, passed as a list of lists so none is taken for a multi-reference
    scores = rouge(predictions, [[r] for r in references])
    return {
        "exact_match": exact / len(predictions),
        "rouge_l": float(scores["rougeL_fmeasure"]),
        "count": len(predictions),
    }
