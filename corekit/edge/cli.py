"""``corekit-edge BUNDLE --prompt TEXT``: generate from an export bundle, streaming, without torch.

Errors a user can cause (a missing or tampered bundle, bad sampling arguments) print one
paragraph on stderr and exit with code 2.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from corekit.errors import CorekitError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


class TextStream:
    """Turns token ids into text as they come, holding back an unfinished UTF-8 character."""

    def __init__(self, decode) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self.shown = 0

    def push(self, token: int) -> str:
        """Add a token; return the newly complete text (maybe empty)."""
        self.ids.append(token)
        text = self.decode(self.ids)
        if text.endswith("\ufffd"):  # the next byte may complete this character
            return ""
        new, self.shown = text[self.shown:], len(text)
        return new

    def flush(self) -> str:
        """Whatever is left, incomplete characters included."""
        text = self.decode(self.ids)
        new, self.shown = text[self.shown:], len(text)
        return new


@app.command()
def edge(
    bundle: Path = typer.Argument(..., help="a bundle directory written by `corekit export onnx`"),
    prompt: List[str] = typer.Option([], "--prompt", "-p", help="text to continue (repeat for a batch)"),
    classify: List[str] = typer.Option([], "--classify", "-c", help="a classifier bundle: text to label (repeatable)"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", help="most tokens to generate"),
    temperature: float = typer.Option(0.8, "--temperature", "-t", help="0 = greedy"),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="sample from the k most likely tokens"),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="sample from the smallest set with this probability"),
    stop: List[str] = typer.Option([], "--stop", help="a special token that ends generation (default: <|endoftext|>)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed for reproducible sampling"),
    threads: Optional[int] = typer.Option(None, "--threads", help="onnxruntime threads"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="check the files' sha256 on load"),
) -> None:
    """Generate from an exported model with onnxruntime (no PyTorch), streaming the text; or, with a
    classifier bundle, label texts (--classify)."""
    from corekit.edge.runtime import EdgeModel

    if bool(prompt) == bool(classify):
        raise CorekitError("give --prompt TEXT to generate, or --classify TEXT with a classifier bundle")
    model = EdgeModel(bundle, verify=verify, threads=threads)
    if model.task.get("kind") == "classify" and prompt:
        raise CorekitError(f"{bundle} is a classifier ({', '.join(model.task['labels'])}): use --classify TEXT")
    if classify:
        for row in model.classify(classify):
            typer.echo(f"{row['label']}\t{row['probability']:.3f}\t{row['text']}")
        return
    stops: list[int | str | None] = list(stop) if stop else [model.eot_id]
    if len(prompt) > 1:  # a batch: print each row when done
        start = time.perf_counter()
        ids = model.generate([model.encode(p) for p in prompt], max_new_tokens=max_new_tokens,
                             temperature=temperature, top_k=top_k, top_p=top_p, stop_tokens=stops, seed=seed)
        for p, row in zip(prompt, ids, strict=True):
            typer.echo(f"--- {p!r}")
            typer.echo(p + model.decode(row))
        _rate(sum(len(row) for row in ids), time.perf_counter() - start)
        return
    stream = TextStream(model.decode)
    sys.stdout.write(prompt[0])
    sys.stdout.flush()
    count = 0
    start = time.perf_counter()

    def show(row: int, token: int) -> None:
        nonlocal count
        count += 1
        sys.stdout.write(stream.push(token))
        sys.stdout.flush()

    model.generate(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   stop_tokens=stops, seed=seed, on_token=show)
    sys.stdout.write(stream.flush() + "\n")
    sys.stdout.flush()
    _rate(count, time.perf_counter() - start)


def _rate(tokens: int, seconds: float) -> None:
    typer.echo(f"[{tokens} tokens in {seconds:.2f} s, {tokens / max(seconds, 1e-9):.1f} tokens/s]", err=True)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; exit 2 with a readable message on any user error."""
    try:
        app(args=argv, prog_name="corekit-edge")
    except CorekitError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # python -m corekit.edge.cli
    main()
