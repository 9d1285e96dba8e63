"""``corekit generate``: continue prompts with a model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from corekit.errors import CorekitError


def _stop_ids(tokenizer, stops: list[str], stop_ids: list[int]) -> list[int]:
    ids = []
    for stop in stops:
        encoded = tokenizer.encode(stop)
        if len(encoded) != 1:
            raise CorekitError(
                f"--stop {stop!r} is {len(encoded)} tokens; give a special token "
                f"({', '.join(tokenizer.special_tokens) or 'none'}) or a single-token string, or use --stop-id"
            )
        ids.append(encoded[0])
    for index in stop_ids:
        if not 0 <= index < tokenizer.vocab_size:
            raise CorekitError(f"--stop-id {index} is outside the tokenizer's ids [0, {tokenizer.vocab_size})")
        ids.append(index)
    return ids


def _open(target: Path, run_dir: Optional[Path], set_: list[str]):
    """The run TARGET names: a run directory, or a spec file (trained into its run directory or not)."""
    from corekit.run import Run
    from corekit.rundir import RunDir
    from corekit.spec import load_spec

    if target.is_dir():
        return Run.open(target, trained=False, overrides=set_)
    return Run(RunDir.for_spec(target, run_dir), load_spec(target, set_))


def generate(
    target: Path = typer.Argument(
        ..., help="a run directory, or a run spec (its run's weights if trained, else random)"
    ),
    prompt: List[str] = typer.Option(..., "--prompt", "-p", help="prompt text (repeat for a batch)"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", help="most tokens to add"),
    temperature: float = typer.Option(0.8, "--temperature", "-t", help="0 = greedy"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="sample from the k most likely tokens"),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="nucleus sampling mass"),
    seed: int = typer.Option(0, "--seed", help="seed for weights initialisation and sampling"),
    stop: List[str] = typer.Option(
        [], "--stop", help="stop text: a special token or single-token string (default: <|endoftext|>)"
    ),
    stop_id: List[int] = typer.Option([], "--stop-id", help="stop token id (repeatable)"),
    set_: List[str] = typer.Option([], "--set", help="override a spec field, e.g. --set model.n_layers=2"),
    run_dir: Optional[Path] = typer.Option(
        None, "--run-dir", help="where a spec's trained tokenizer is (default: runs/<spec stem>)"
    ),
) -> None:
    """Generate text from a run's trained model (random, seeded weights if it has none yet)."""
    from corekit.generation import check_sampling
    from corekit.generation import generate as run_generation

    check_sampling(max_new_tokens, temperature, top_k, top_p)
    run = _open(target, run_dir, set_)
    if run.head is not None:
        raise CorekitError(f"{target} is a classifier (its model ends in a {run.head.name} head over "
                           f"{len(run.head.labels)} labels): it has no LM head to generate with; "
                           f"use `corekit classify {target} --text ...`")
    tokenizer = run.tokenizer
    model = run.model(seed=seed)
    stops = _stop_ids(tokenizer, stop, stop_id) if stop or stop_id else [tokenizer.eot_id]
    kwargs = dict(
        tokenizer=tokenizer, max_new_tokens=max_new_tokens, temperature=temperature,
        top_k=top_k, top_p=top_p, stop_tokens=stops, seed=seed,
    )
    if len(prompt) == 1:
        # stream: print the new text as each token arrives
        typer.echo(prompt[0], nl=False)
        state = {"ids": [], "shown": ""}

        def on_token(row: int, token: int) -> None:
            state["ids"].append(token)
            text = tokenizer.decode(state["ids"])
            if not text.endswith("\ufffd"):  # wait for a multi-byte character to complete
                typer.echo(text[len(state["shown"]):], nl=False)
                state["shown"] = text

        final = run_generation(model, prompt, on_token=on_token, **kwargs)[0]
        typer.echo(final[len(state["shown"]):])
        return
    for text, out in zip(prompt, run_generation(model, prompt, **kwargs), strict=True):
        typer.echo(f"--- {text!r}\n{text}{out}")
