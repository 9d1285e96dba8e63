"""A sample of generated text at every validation, printed and kept in ``samples.txt``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from corekit.io import atomic_write_text


class SampleCallback(L.Callback):
    """After each validation, continue a fixed prompt (the start of the first val window)."""

    def __init__(self, tokenizer, prompt_ids: list[int], path: Path, max_new_tokens: int = 48, seed: int = 0) -> None:
        self.tokenizer, self.prompt_ids, self.path = tokenizer, prompt_ids, path
        self.max_new_tokens, self.seed = max_new_tokens, seed
        self.last_step: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking or trainer.global_step == self.last_step:
            return
        self.last_step = trainer.global_step
        from corekit.generation import generate

        out = generate(pl_module.model, [self.prompt_ids], tokenizer=None, max_new_tokens=self.max_new_tokens,
                       temperature=0.8, top_k=50, seed=self.seed, stop_tokens=[self.tokenizer.eot_id])[0]
        usable = [i for i in out if i < self.tokenizer.vocab_size]
        text = self.tokenizer.decode(self.prompt_ids) + "⟫" + self.tokenizer.decode(usable)
        rank_zero_info(f"sample at step {trainer.global_step}: {text!r}")
        previous = self.path.read_text(encoding="utf-8") if self.path.is_file() else ""
        atomic_write_text(self.path, previous + f"--- step {trainer.global_step}\n{text}\n")
