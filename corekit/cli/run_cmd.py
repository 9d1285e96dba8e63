"""``corekit run`` (every stage a spec asks for, in order; see :mod:`corekit.stage`) and ``corekit eval``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer



def evaluate(
    run_dir: Path = typer.Argument(..., help="a trained run directory"),
    windows: int = typer.Option(64, "--windows", help="validation windows to score"),
    data: Optional[Path] = typer.Option(
        None, "--data", help="JSONL of {prompt, reference}: adds BLEU and ROUGE-L (a classifier: labelled CSV/JSONL)"
    ),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", help="tokens generated per prompt (--data)"),
) -> None:
    """Validation loss and perplexity of a run's model; with --data, BLEU and ROUGE-L of its
    greedy continuations against references. A classifier run: accuracy, macro-F1 and the
    confusion matrix on its held-out examples (or --data)."""
    from corekit.run import Run
    from corekit.train.evaluate import perplexity, validation_loss

    run = Run.open(run_dir)
    spec = run.spec
    if run.head is not None:
        _evaluate_classifier(run, data)
        return
    pairs = None
    if data is not None:
        from corekit.train.evaluate import read_pairs

        pairs = read_pairs(data)  # before any slow work: a bad file fails at once
    model = run.model()
    loss = validation_loss(model, run.data, spec.model.context_length, max_windows=windows)
    typer.echo(f"{run.path}: val loss {loss:.4f}, perplexity {perplexity(loss):.2f} ({windows} windows max)")
    if pairs is not None:
        from corekit.train.evaluate import generation_scores

        scores = generation_scores(model, run.tokenizer, pairs, max_new_tokens)
        typer.echo(f"{data}: {len(pairs)} pairs, BLEU {scores['bleu']:.4f}, ROUGE-L F1 {scores['rougeL']:.4f}")


def _evaluate_classifier(run, data: Optional[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    from corekit.finetune.evaluate import classifier_examples, evaluate_classify

    spec = run.spec
    examples, where = classifier_examples(spec, run.tokenizer, str(data) if data is not None else None)
    model = run.model().eval()
    result = evaluate_classify(model, examples, run.head.labels, run.head.pooling)
    console = Console(highlight=False)
    typer.echo(f"{run.path} on {where}: {result['count']} examples, accuracy {result['accuracy']:.4f}, "
               f"macro-F1 {result['macro_f1']:.4f}")
    table = Table(title="confusion (rows: true, columns: predicted)")
    table.add_column("")
    for label in result["labels"]:
        table.add_column(label, justify="right")
    for label, row in zip(result["labels"], result["confusion"]):
        table.add_row(label, *map(str, row))
    console.print(table)


def run(
    spec_file: Path = typer.Argument(..., help="a run spec"),
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", help="the run directory (default: runs/<spec file stem>)"
    ),
    set_: List[str] = typer.Option([], "--set", help="override a spec field, e.g. --set train.max_steps=50"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1, help="tokenizer processes for data prepare"),
) -> None:
    """Every stage the spec asks for, in order: tokenizer, data, train, evaluate (val loss and
    samples), then compress when the spec has a [compress] section (into RUN/compress/) and export
    when it has an [export] section (of the compressed model, if any), and any stage a plugin adds;
    stages whose outputs are current are skipped (`corekit plugins --kind stage` lists them)."""
    from rich.console import Console

    from corekit.plugins import get_registry
    from corekit.rundir import RunDir
    from corekit.spec import load_spec
    from corekit.stage import RunContext, run_stages

    registry = get_registry()
    spec = load_spec(spec_file, set_, registry)
    run_stages(RunContext(spec, RunDir.for_spec(spec_file, run_dir), registry, Console(stderr=True), Console(),
                          workers=workers))
