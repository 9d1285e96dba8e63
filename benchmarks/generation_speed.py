"""Decode speed with and without the KV cache (CPU, fp32, greedy), in one run.

    python benchmarks/generation_speed.py [--spec examples/tiny.toml] [--tokens 128]
"""

from __future__ import annotations

import argparse
import time

import torch

from corekit import build_model, generate, load_spec


def tokens_per_second(model, prompts, new_tokens: int, use_cache: bool) -> float:
    start = time.perf_counter()
    out = generate(model, prompts, max_new_tokens=new_tokens, temperature=0, use_cache=use_cache)
    elapsed = time.perf_counter() - start
    return sum(len(o) for o in out) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="examples/tiny.toml")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    spec = load_spec(args.spec)
    model = build_model(spec).eval()
    prompts = [[1 + i] * 16 for i in range(args.batch)]
    tokens_per_second(model, prompts, 8, True)  # warm-up
    cached = tokens_per_second(model, prompts, args.tokens, True)
    recompute = tokens_per_second(model, prompts, args.tokens, False)
    print(f"spec {args.spec}, batch {args.batch}, prompt 16, new tokens {args.tokens}, "
          f"threads {torch.get_num_threads()}")
    print(f"with KV cache   {cached:10.1f} tokens/s")
    print(f"recompute       {recompute:10.1f} tokens/s")
    print(f"speed-up        {cached / recompute:10.2f}x")


if __name__ == "__main__":
    main()
