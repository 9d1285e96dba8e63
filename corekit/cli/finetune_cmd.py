"""``corekit finetune``, ``corekit classify`` and ``corekit chat``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from corekit.errors import CorekitError


def finetune(
    target: Path = typer.Argument(..., help="a fine-tuning spec ([finetune] names the base run, task, data and "
                                            "method); or, with --merge, a run fine-tuned with an adapter"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="the new run (default: runs/<spec stem>, or "
                                                                   "RUN-merged when merging a run)"),
    set_: List[str] = typer.Option([], "--set", help="override a field, e.g. --set train.max_steps=200"),
    merge: Optional[bool] = typer.Option(None, "--merge/--no-merge", help="fold the adapter into the weights "
                                                                          "(default: the spec's finetune.merge)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """Fine-tune a trained run (classification, instruction tuning or DPO; full or with an adapter)
    into a new run that eval, generate, compress and export take as they are."""
    from rich.console import Console

    from corekit.finetune.train import finetune as run_finetune
    from corekit.finetune.train import merge_run

    console = Console(highlight=False)
    if target.is_dir():
        if not merge:
            raise CorekitError(f"{target} is a directory: give a fine-tuning spec file, or add --merge to fold a "
                               "fine-tuned run's adapter into its weights")
        if set_:
            raise CorekitError("--set applies to a fine-tuning spec, not to --merge of a run")
        out = merge_run(target, run_dir)
        console.print(f"merged the adapter of {target} into {out}/model.safetensors")
        return
    report = run_finetune(target, run_dir, overrides=set_, merge=merge, progress=not quiet,
                          say=lambda m: console.print(m, markup=False))
    _summary(console, report)


def _summary(console, report: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{report['task']} fine-tuning ({report['method']}) -> {report['out']}")
    table.add_column("figure")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    keys = [k for k, v in report["after"].items() if isinstance(v, float)]
    for key in keys:
        table.add_row(key, f"{report['before'].get(key, float('nan')):.4f}", f"{report['after'][key]:.4f}")
    console.print(table)
    files = report["files"]
    extra = f", adapter {files['adapter_bytes'] / 1024:.1f} KiB" if "adapter_bytes" in files else ""
    console.print(f"{report['parameters']['trainable']:,} of {report['parameters']['total']:,} parameters trained, "
                  f"{report['steps']} steps{extra}", markup=False)


def classify(
    run_dir: Path = typer.Argument(..., help="a run fine-tuned with task = 'classify'"),
    text: List[str] = typer.Option([], "--text", "-t", help="a text to classify (repeatable)"),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="a text file: one text per line"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per text, with every label's probability"),
) -> None:
    """Classify texts with a fine-tuned classifier: the label and its probability."""
    from corekit.finetune.serve import classify_texts, load_run

    texts = list(text)
    if file is not None:
        try:
            texts += [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise CorekitError(f"--file {file}: cannot read it ({exc})") from None
    if not texts:
        raise CorekitError("nothing to classify: give --text TEXT (repeatable) or --file FILE")
    spec, tokenizer, model = load_run(run_dir)
    results = classify_texts(spec, tokenizer, model, texts)
    if as_json:
        for row in results:
            typer.echo(json.dumps(row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    table.add_column("text")
    table.add_column("label")
    table.add_column("p", justify="right")
    for row in results:
        table.add_row(row["text"] if len(row["text"]) <= 60 else row["text"][:57] + "...", row["label"],
                      f"{row['probability']:.3f}")
    Console(highlight=False).print(table)


def chat(
    run_dir: Path = typer.Argument(..., help="an instruction-tuned run (any language-model run works)"),
    system: Optional[str] = typer.Option(None, "--system", help="a system message"),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", "-n", help="longest answer, in tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="sample from the k most likely tokens"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
) -> None:
    """Talk to a run in the terminal, through the prompt template it was tuned with.
    /reset forgets the conversation; /exit (or Ctrl-D) leaves."""
    from rich.console import Console

    from corekit.finetune.serve import ChatSession, load_run
    from corekit.generation import check_sampling

    check_sampling(max_new_tokens, temperature, top_k, None)
    spec, tokenizer, model = load_run(run_dir)
    session = ChatSession(spec, tokenizer, model, system=system, max_new_tokens=max_new_tokens,
                          temperature=temperature, top_k=top_k, seed=seed)
    console = Console(highlight=False)
    console.print(f"chatting with {run_dir} ({type(session.template).__name__} template); /reset, /exit",
                  style="dim", markup=False)
    while True:
        try:
            message = console.input("[bold]you>[/bold] ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if message.strip() in ("/exit", "/quit"):
            return
        if message.strip() == "/reset":
            session.reset()
            console.print("(conversation forgotten)", style="dim")
            continue
        if not message.strip():
            continue
        console.print("[bold]model>[/bold] ", end="")
        session.reply(message, on_text=lambda piece: console.print(piece, end="", markup=False))
        console.print()
