"""``corekit run`` (every stage a spec names, in order) and ``corekit eval``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

SAMPLE_PROMPTS = ["def ", "import ", "The "]


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
    if run.is_classifier:
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
    result = evaluate_classify(model, examples, spec.finetune.labels, spec.finetune.pooling)
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
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="the run directory (default: runs/<spec file stem>)"),
    set_: List[str] = typer.Option([], "--set", help="override a spec field, e.g. --set train.max_steps=50"),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", min=1, help="tokenizer processes for data prepare"),
) -> None:
    """Every stage in order: tokenizer, data, train, eval, samples, then compress when the spec has a
    [compress] section (into RUN/compress/) and export when it has an [export] section (of the
    compressed model, if any); finished stages are skipped."""
    from rich.console import Console
    from rich.table import Table

    from corekit.generation import generate
    from corekit.plugins import get_registry
    from corekit.run import Run
    from corekit.rundir import RunDir, ensure_tokenizer, prepare_data
    from corekit.spec import load_spec
    from corekit.train.evaluate import perplexity, validation_loss
    from corekit.train.fit import train

    console = Console(stderr=True)
    registry = get_registry()
    spec = load_spec(spec_file, set_, registry)
    run_ = RunDir.for_spec(spec_file, run_dir)
    t = spec.train

    console.print(f"[bold]tokenizer[/] -> {run_.tokenizer}")
    tokenizer, trained = ensure_tokenizer(spec, run_, registry)
    console.print(f"  {'trained' if trained else 'kept'} {spec.tokenizer.name}, {tokenizer.vocab_size} ids")
    console.print(f"[bold]data[/] -> {run_.data}")
    result = prepare_data(spec, run_, tokenizer, workers=workers)
    stats = result.manifest["stats"]
    console.print(f"  {'unchanged' if result.skipped else 'prepared'}: {stats['train']['tokens']:,} train and "
                  f"{stats['val']['tokens']:,} val tokens")

    weights = run_.path / "model.safetensors"
    before = None
    if weights.is_file():
        console.print(f"[bold]train[/]: {weights} exists; skipped")
    else:
        before = validation_loss(Run.for_spec(spec, run_, registry).model(), run_.data, spec.model.context_length,
                                 max_windows=spec.data.val_windows)
        resume = (run_.path / "checkpoints" / "last.ckpt").is_file()
        console.print(f"[bold]train[/]: {t.max_steps} steps" + (" (resuming)" if resume else ""))
        train(spec, run_, registry, resume=resume, workers=workers)

    model = Run.for_spec(spec, run_, registry).model()
    after = validation_loss(model, run_.data, spec.model.context_length, max_windows=spec.data.val_windows)
    table = Table(title=f"{run_.path}", title_justify="left", show_header=False)
    if before is not None:
        table.add_row("val loss before training", f"{before:.4f} (perplexity {perplexity(before):.2f})")
    table.add_row("val loss", f"{after:.4f} (perplexity {perplexity(after):.2f})")
    samples = generate(model, SAMPLE_PROMPTS, tokenizer=tokenizer, max_new_tokens=64, temperature=0.8,
                       top_k=50, stop_tokens=[tokenizer.eot_id], seed=t.seed)
    out = Console()
    out.print(table)
    for prompt, text in zip(SAMPLE_PROMPTS, samples, strict=True):
        out.rule(f"sample: {prompt!r}")
        out.print(prompt + text, markup=False, highlight=False)
    final = _compress_stage(spec, run_, registry, console) if spec.compress else run_.path
    if spec.export is not None:
        _export_stage(spec, final, run_.path / "export", console)


def _compress_stage(spec, run_, registry, console) -> Path:
    """Apply the spec's compressors in order, each into ``RUN/compress/<i>-<name>`` (skipped when
    that run was made by the same compressor from the same weights); returns the last one."""
    from corekit.cli.compress_cmd import compress_and_report
    from corekit.compress.run import report_is_current

    source = run_.path
    for index, params in enumerate(spec.compress, start=1):
        out = run_.path / "compress" / f"{index}-{params.name}"
        if report_is_current(out, source / "model.safetensors", params):
            console.print(f"[bold]compress[/]: {out} is current; skipped")
        else:
            compress_and_report(source, params, out, registry)
        source = out
    return source


def _export_stage(spec, source: Path, out: Path, console) -> None:
    from corekit.cli.export_cmd import export_and_report
    from corekit.export.bundle import bundle_is_current

    e = spec.export
    if bundle_is_current(out, source / "model.safetensors", quantize=e.quantize, opset=e.opset):
        console.print(f"[bold]export[/]: {out} is current; skipped")
        return
    console.print(f"[bold]export[/] {source} -> {out} (onnx, quantize {e.quantize})")
    export_and_report(source, out, quantize=e.quantize, opset=e.opset)
