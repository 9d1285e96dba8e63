"""Synthetic fine-tuning tasks, for the examples and the tests: small tasks a tiny pretrained
model cannot do before fine-tuning and learns in a few hundred steps.

``python -m corekit.finetune.synthetic DIR`` writes ``sorted.csv`` (classification),
``count.jsonl`` (instructions, Alpaca form) and ``shout.jsonl`` (preference pairs) into DIR.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

WORDS = "zero one two three four five six seven eight nine".split()


def sorted_digits_csv(path: Path, n: int = 600, seed: int = 0) -> Path:
    """``text,label``: a string of 4-8 digits, label ``sorted`` when its digits are in order."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for _ in range(n):
            digits = [rng.choice("0123456789") for _ in range(rng.randint(4, 8))]
            if rng.random() < 0.5:
                digits.sort()
            writer.writerow(["".join(digits), "sorted" if digits == sorted(digits) else "unsorted"])
    return path


def counting(rng: random.Random, most: int = 4) -> tuple[str, str]:
    """An instruction ``count N after WORD`` and its answer, the next N number words (the
    pretraining corpus counts in words, so the knowledge is there; the format is not)."""
    start, n = rng.randrange(10), rng.randint(1, most)
    return f"count {n} after {WORDS[start]}", " ".join(WORDS[(start + i) % 10] for i in range(1, n + 1))


def counting_jsonl(path: Path, n: int = 600, seed: int = 1, chat: bool = False) -> Path:
    """Alpaca records (or chat records with ``chat``) of :func:`counting`."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(n):
            prompt, answer = counting(rng)
            record = ({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}
                      if chat else {"instruction": prompt, "output": answer})
            fh.write(json.dumps(record) + "\n")
    return path


def shouting_preferences(path: Path, n: int = 400, seed: int = 2) -> Path:
    """Preference pairs: the counting answer in capitals is chosen, the lowercase one (what
    the pretrained model finds likelier) rejected."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(n):
            prompt, answer = counting(rng, most=3)
            fh.write(json.dumps({"prompt": prompt, "chosen": answer.upper(), "rejected": answer}) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    """Write the three example files into the directory given (default ``.``)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else ".")
    out.mkdir(parents=True, exist_ok=True)
    for path in (sorted_digits_csv(out / "sorted.csv"), counting_jsonl(out / "count.jsonl"),
                 shouting_preferences(out / "shout.jsonl")):
        print(path)


if __name__ == "__main__":
    main()
