"""Tokenizer training and encoding through corekit vs HF ``tokenizers`` directly, and
``data prepare`` throughput with 1 and 2 processes, all on the embedded corpus.

Kit and direct runs alternate within one run, each side going first in every other round
(best of ``--rounds`` each), so the ratio is fair on a noisy machine:

    python benchmarks/tokenizer_and_data.py [--vocab 4096] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from corekit.data.shards import prepare_shards
from corekit.data.sources import CleanStats, split_documents
from corekit.plugins import get_registry
from corekit.spec import load_spec

SPECIALS = ["<|endoftext|>"]


def hf_train(docs: list[str], vocab: int) -> Tokenizer:
    """The same tokenizer corekit's bpe plugin builds, made with tokenizers alone."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer)
    return tok


def timed(fn):
    """Wall seconds, process CPU seconds (all threads) and the result of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    registry = get_registry()
    spec = load_spec({"model": {"attention": {"n_heads": 4}},
                      "tokenizer": {"name": "bpe", "vocab_size": args.vocab}}, registry=registry)
    docs = list(split_documents(spec.data, "train", CleanStats()))
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    print(f"embedded corpus, train split: {len(docs)} documents, {mb:.1f} MB; bpe vocab {args.vocab}")

    train: dict[str, list[tuple[float, float]]] = {"kit": [], "hf": []}
    encode: dict[str, list[tuple[float, float]]] = {"kit": [], "hf": []}
    for round_ in range(args.rounds):
        # alternate who goes first, so neither side always meets a cold (or warm) machine
        for side in (("kit", "hf") if round_ % 2 == 0 else ("hf", "kit")):
            if side == "kit":
                t, kit_tok = timed(lambda: registry.build("tokenizer", spec.tokenizer).train(docs))
                train["kit"].append(t)
                encode["kit"].append(timed(lambda: kit_tok.encode_batch(docs, allow_special=False))[0])
            else:
                t, hf_tok = timed(lambda: hf_train(docs, args.vocab))
                train["hf"].append(t)
                encode["hf"].append(timed(lambda: [e.ids for e in hf_tok.encode_batch(docs)])[0])
    assert kit_tok.hf.to_str() == hf_tok.to_str(), "kit and direct tokenizers differ"
    print(f"\n{'step':30s} {'corekit':>10s} {'tokenizers':>11s} {'overhead':>9s}")
    for label, d, index, to_rate in (
        ("train, wall (s)", train, 0, False), ("train, CPU (s)", train, 1, False),
        ("encode_batch, wall (MB/s)", encode, 0, True), ("encode_batch, CPU (MB/s)", encode, 1, True),
    ):
        kit, hf = (min(t[index] for t in d[side]) for side in ("kit", "hf"))
        show = (lambda x: mb / x) if to_rate else (lambda x: x)
        print(f"{label:30s} {show(kit):10.2f} {show(hf):11.2f} {kit / hf - 1:+9.1%}")

    print(f"\n{'data prepare (whole corpus)':28s} {'seconds':>10s} {'MB/s':>11s}")
    with tempfile.TemporaryDirectory() as tmp:
        path = kit_tok.save(Path(tmp) / "tokenizer.json")
        from corekit.io import file_sha256

        total_mb = None
        for workers in (1, 2):
            out = Path(tmp) / f"data{workers}"
            seen = {"bytes": 0}

            def on_progress(_docs: int, nbytes: int) -> None:
                seen["bytes"] += nbytes

            (t, _cpu), _ = timed(lambda: prepare_shards(out, spec.data, kit_tok, file_sha256(path),
                                                workers=workers, on_progress=on_progress))
            total_mb = seen["bytes"] / 1e6
            print(f"{f'{workers} process(es)':28s} {t:10.2f} {total_mb / t:11.2f}")
        same = all((Path(tmp) / "data1" / f.name).read_bytes() == f.read_bytes()
                   for f in (Path(tmp) / "data2").glob("*.bin"))
        print(f"shards identical for 1 and 2 processes: {same}")


if __name__ == "__main__":
    main()
