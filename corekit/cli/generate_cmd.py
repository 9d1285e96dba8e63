"""``corekit generate``: continue prompts with a model."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from corekit.errors import CorekitError


def _stop_ids(tokenizer, stops: list[str]) -> list[int]:
    ids = []
    for stop in stops:
        if stop in tokenizer.special_tokens:
            ids.append(tokenizer.special_tokens[stop])
        elif stop.isdigit():
            ids.append(int(stop))
        else:
            encoded = tokenizer.encode(stop)
            if len(encoded) != 1:
                raise CorekitError(
                    f"--stop {stop!r} is {len(encoded)} tokens; give a special token "
                    f"({', '.join(tokenizer.special_tokens) or 'none'}), a single-token string or a token id"
                )
            ids.append(encoded[0])
    return ids


def generate(
    target: Path = typer.Argument(..., help="a run spec (random weights until a trained run is given)"),
    prompt: List[str] = typer.Option(..., "--prompt", "-p", help="prompt text (repeat for a batch)"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", help="most tokens to add"),
    temperature: float = typer.Option(0.8, "--temperature", "-t", help="0 = greedy"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="sample from the k most likely tokens"),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="nucleus sampling mass"),
    seed: int = typer.Option(0, "--seed", help="seed for weights initialisation and sampling"),
    stop: List[str] = typer.Option([], "--stop", help="stop token (default: <|endoftext|> if the tokenizer has it)"),
    set_: List[str] = typer.Option([], "--set", help="override a spec field, e.g. --set model.n_layers=2"),
) -> None:
    """Generate text from a spec's model (randomly initialised, seeded)."""
    import torch

    from corekit.assemble import build_model, build_tokenizer
    from corekit.generation import generate as run_generation
    from corekit.spec import load_spec

    spec = load_spec(target, set_)
    tokenizer = build_tokenizer(spec)
    torch.manual_seed(seed)
    model = build_model(spec, vocab_size=spec.model.vocab_size or tokenizer.vocab_size)
    stops = _stop_ids(tokenizer, stop) if stop else [i for i in [tokenizer.eot_id] if i is not None]
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
    for text, out in zip(prompt, run_generation(model, prompt, **kwargs)):
        typer.echo(f"--- {text!r}\n{text}{out}")
