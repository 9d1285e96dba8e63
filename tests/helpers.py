"""Helpers shared by tests: small model sections and models built from them."""

from __future__ import annotations

import random
from pathlib import Path

def model_section(**overrides) -> dict:
    """A small ``[model]`` section as a dict; keyword arguments replace fields."""
    section = {
        "context_length": 32,
        "d_model": 32,
        "n_layers": 2,
        "attention": {"name": "mha", "n_heads": 4},
        "norm": "layernorm",
        "mlp": {"activation": "gelu"},
        "position": "learned",
    }
    section.update(overrides)
    return section


def tiny_spec(registry, **overrides):
    """A validated :func:`model_section` with a 64-token vocabulary."""
    from corekit.spec import ModelSpec

    return registry.resolve(ModelSpec).model_validate(model_section(**{"vocab_size": 64, **overrides}))


def tiny_model(registry, seed: int = 0, **overrides):
    """A randomly initialised model of :func:`tiny_spec`, in eval mode."""
    import torch

    from corekit.assemble import build_model

    torch.manual_seed(seed)
    return build_model(tiny_spec(registry, **overrides), registry).eval()


def attention(name: str, kernel: str = "flash", **extra) -> dict:
    """An attention table: ``mha``, ``gqa`` (2 KV heads) or ``mqa`` with 4 query heads."""
    table = {"name": name, "n_heads": 4, "kernel": kernel, **extra}
    if name == "gqa":
        table.setdefault("n_kv_heads", 2)
    return table


def run_cli(capsys, *args):
    """Run the ``corekit`` CLI in-process; return ``(exit code, stdout, stderr)``."""
    from corekit.cli.main import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def flip_byte(path, offset: int) -> None:
    """Corrupt a file in place by flipping the low bit of the byte at ``offset``."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 1]))


WORDS = "the of and to in is was for on that with as by at from alpha beta gamma delta".split()


def write_spec(tmp_path: Path, **train) -> Path:
    """A small spec file in ``tmp_path`` over a generated 40-file corpus; keyword arguments set [train] fields."""
    rng = random.Random(0)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):
        (corpus / f"{i:03d}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(60)) + "\n")
    train = {"max_steps": 6, "batch_size": 4, "eval_every": 3, "checkpoint_every": 3, "log_every": 1, **train}
    lines = ["[model]", "context_length = 32", "d_model = 32", "n_layers = 2",
             "[model.attention]", "n_heads = 4", "[data]", f'paths = ["{corpus}"]', "val_fraction = 0.2",
             "[train]", *[f"{k} = {v}" for k, v in train.items()],
             "[train.optimizer]", 'name = "adamw"', "lr = 3e-3"]
    path = tmp_path / "spec.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
