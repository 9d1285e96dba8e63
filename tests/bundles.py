"""A small trained run for the export and edge tests, made from generated text."""

from __future__ import annotations

import random
from pathlib import Path

SPEC = """\
[model]
context_length = 64
d_model = 64
n_layers = 2
[model.attention]
name = "gqa"
n_heads = 4
n_kv_heads = 2
[model.norm]
name = "rmsnorm"
[model.mlp]
activation = "swiglu"
[model.position]
name = "rope"
[tokenizer]
name = "bytes"
[data]
paths = ["{corpus}"]
val_fraction = 0.1
val_windows = 16
[train]
max_steps = {steps}
batch_size = 16
eval_every = {steps}
checkpoint_every = {steps}
log_every = 50
[train.optimizer]
name = "adamw"
lr = 5e-3
"""


def sentences(rng: random.Random, n: int) -> str:
    """Text with learnable structure: counting phrases and a few fixed patterns."""
    words = "zero one two three four five six seven eight nine".split()
    lines = []
    for _ in range(n):
        start = rng.randrange(10)
        lines.append(" ".join(words[(start + i) % 10] for i in range(rng.randint(3, 8))) + ".")
        lines.append(f"def {rng.choice(words)}_{rng.choice(words)}(x):\n    return x + {rng.randrange(100)}\n")
    return "\n".join(lines)


def train_small_run(root: Path, steps: int = 80) -> Path:
    """Write a corpus and spec under ``root``, train with ``corekit train``; return the run directory."""
    from corekit.cli.main import main

    corpus = root / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    for i in range(20):
        (corpus / f"{i:02d}.txt").write_text(sentences(rng, 60))
    spec = root / "spec.toml"
    spec.write_text(SPEC.format(corpus=corpus, steps=steps))
    run = root / "run"
    try:
        main(["train", str(spec), "--run-dir", str(run), "-j", "1"])
    except SystemExit as exc:
        if exc.code:
            raise RuntimeError(f"training the test run failed with exit code {exc.code}") from None
    return run
