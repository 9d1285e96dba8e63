"""Fine-tuning spec files for the tests; the synthetic data is :mod:`corekit.finetune.synthetic`."""

from __future__ import annotations

from pathlib import Path

from corekit.finetune.synthetic import counting_jsonl, shouting_preferences, sorted_digits_csv  # noqa: F401


def finetune_spec(path: Path, base: Path, task: str, train: Path, *, steps: int, lr: float = 3e-3,
                  batch_size: int = 32, extra: str = "", train_extra: str = "") -> Path:
    """A fine-tuning spec file (absolute paths, so the test's working directory does not matter)."""
    path.write_text(
        f'[finetune]\nbase = "{base}"\ntask = "{task}"\n{extra}\n[finetune.data]\ntrain = "{train}"\n'
        f"[train]\nmax_steps = {steps}\nbatch_size = {batch_size}\neval_every = {steps}\n{train_extra}\n"
        f'[train.optimizer]\nname = "adamw"\nlr = {lr}\n[train.scheduler]\nname = "cosine"\nwarmup_steps = 10\n',
        encoding="utf-8",
    )
    return path
