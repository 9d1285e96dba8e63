"""int8 block size against decode speed and file size, for one model shape.

Exports the spec's model (randomly initialised) to an fp32 graph, quantizes it with
:func:`corekit.export.quantize.quantize_int8` at several ``MatMulNBits`` block sizes, and times
one 1-token decode step (past ``--past``) at batch 1 and 8 for every graph, interleaved round
by round so that a noisy machine slows them alike. Prints median milliseconds and file sizes.

    python benchmarks/int8_blocks.py [--spec examples/gpt2-small.toml] [--blocks 32,64,128]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="examples/gpt2-small.toml")
    parser.add_argument("--blocks", default="32,64,128")
    parser.add_argument("--past", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()

    from corekit.assemble import build_model
    from corekit.export.graph import export_graph
    from corekit.export.quantize import quantize_int8
    from corekit.export.verify import session
    from corekit.plugins import get_registry
    from corekit.spec import load_spec

    registry = get_registry()
    spec = load_spec(args.spec, registry=registry)
    torch.manual_seed(0)
    model = build_model(spec.model, registry).eval()
    work = Path(tempfile.mkdtemp(prefix="int8-blocks-"))
    graphs = {"fp32": work / "fp32.onnx"}
    layout = export_graph(model, graphs["fp32"])
    for block in (int(b) for b in args.blocks.split(",")):
        graphs[f"int8 block {block}"] = work / f"int8-{block}.onnx"
        quantize_int8(graphs["fp32"], graphs[f"int8 block {block}"], block_size=block)
    sessions = {name: session(path) for name, path in graphs.items()}
    names = [i.name for i in sessions["fp32"].get_inputs()]
    print(f"{args.spec}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
          f"decode step at past {args.past}, median of {args.rounds} interleaved rounds")
    print(f"{'graph':<16} {'MiB':>8} {'/ fp32':>7} {'batch 1 ms':>11} {'batch 8 ms':>11}")
    times: dict[tuple[str, int], list[float]] = {}
    for batch in (1, 8):
        shape = (batch, layout.n_kv_heads, args.past, layout.head_dim)
        past = [np.random.default_rng(0).standard_normal(shape, dtype=np.float32) for _ in range(2 * layout.n_layers)]
        feed = {"input_ids": np.full((batch, 1), 5, np.int64),
                "attention_mask": np.ones((batch, args.past + 1), np.int64), **dict(zip(names[2:], past, strict=True))}
        for sess in sessions.values():  # warm-up
            sess.run(None, feed)
        for _ in range(args.rounds):
            for name, sess in sessions.items():
                start = time.perf_counter()
                sess.run(None, feed)
                times.setdefault((name, batch), []).append(time.perf_counter() - start)
    fp32_size = graphs["fp32"].stat().st_size
    for name, path in graphs.items():
        size = path.stat().st_size
        print(f"{name:<16} {size / 2**20:>8.1f} {size / fp32_size:>7.1%} "
              f"{statistics.median(times[(name, 1)]) * 1e3:>11.1f} {statistics.median(times[(name, 8)]) * 1e3:>11.1f}")


if __name__ == "__main__":
    main()
