"""Edge bundles (onnxruntime, fp32 and int8) against PyTorch eager: decode speed, time to first
token, bundle size, and whether int8 decoding with the KV cache matches recomputing, in one run.

    python benchmarks/edge_speed.py [--run runs/tiny] [--skip-gpt2] [--repeats 5] [--gpt2-repeats 3]
        [--threads N] [--new-tokens 64] [--gpt2-new-tokens 32] [--work DIR] [--out-json PATH]

Models: "tiny trained", the run ``--run`` (``corekit run examples/tiny.toml``), and "gpt2-small
shape", ``examples/gpt2-small.toml``'s model randomly initialised (seed 0) and saved as a run
(spec, tokenizer, weights). Each is exported twice by :func:`corekit.export.bundle.export_run`,
fp32 and int8, into ``--work`` (default: a temporary directory).

Decode, batch 1 and 8, greedy, every row a 32-token prompt: the prefill (one call on the prompt,
plus choosing the first token) is timed apart from the decode loop (``new - 1`` calls, each
feeding back the last token); tokens/s is ``batch * (new - 1) / decode seconds``. The loops make
the calls of :meth:`EdgeModel.generate` and :func:`corekit.generation.generate`, and are checked
to give their tokens. Contenders: fp32 and int8 bundles in :class:`EdgeModel`; PyTorch with the KV
cache and without it (re-running the whole sequence each step). After a warm-up they take turns
in a rotating order, each turn after a 0.2 s pause (so no one's spinning threads slow the next);
figures are the median and, in brackets, the best turn (noise only adds time). PyTorch and
onnxruntime get the same intra-op threads (``--threads``, default every core). Other processes
wreck these figures on 2-core hosts (PyTorch's OpenMP threads above all), so the cores that
others kept busy during the timing are printed. Time to first token: one prefill call on 256
tokens (context - 1 if shorter: 255 for tiny), batch 1, plus the argmax.

Sizes: all files of a bundle. Cache check (tiny): per code prompt, greedy ``use_cache=True``
against ``use_cache=False``, and the largest logit difference between the cached path's sequence
fed in one call and a token at a time, for the fp32 and int8 bundles and for the fp32 graph put
through plain ``onnxruntime.quantization.quantize_dynamic`` (per-channel int8 MatMul and Gather
weights, one dynamic activation scale per tensor); with validation perplexity on the run's first
32 val windows, as the export scores it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
PROMPT, TTFT_PROMPT, BATCHES = 32, 256, (1, 8)
CODE_PROMPTS = ["def main():\n    ", "import os\nimport sys\n\n\n", "class Config:\n    def __init__(self, ",
                "    for i in range(len(items)):\n        ", "        raise ValueError(", "    return",
                "if __name__ == '__main__':\n", "from collections import"]


def others_busy(since: tuple[float, float, float] | None = None):
    """(wall, all processes' CPU seconds, this process's) now; or, given an earlier reading, the cores
    that other processes kept busy on average since then (Linux /proc/stat; nan elsewhere)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        busy = float("nan")
    now = (time.perf_counter(), busy, sum(os.times()[:2]))
    return now if since is None else ((now[1] - since[1]) - (now[2] - since[2])) / (now[0] - since[0])


def edge_loop(edge, ids: np.ndarray, new: int):
    """Prefill seconds, decode seconds and the (B, new) tokens, as EdgeModel.generate does it."""
    batch, usable = ids.shape[0], edge.usable_vocab
    mask = np.ones_like(ids)
    start = time.perf_counter()
    logits, past = edge.forward(ids, mask, edge.empty_past(batch))
    nxt = logits[:, -1, :usable].argmax(-1)
    prefilled = time.perf_counter()
    out = [nxt]
    for _ in range(new - 1):
        mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
        logits, past = edge.forward(nxt[:, None], mask, past)
        nxt = logits[:, -1, :usable].argmax(-1)
        out.append(nxt)
    return prefilled - start, time.perf_counter() - prefilled, np.stack(out, 1).tolist()


@torch.no_grad()
def torch_loop(model, ids: np.ndarray, new: int, use_cache: bool):
    """The same for the PyTorch model, as corekit.generation.generate does it (unpadded: no mask)."""
    ids = torch.from_numpy(ids)
    cache = model.new_cache() if use_cache else None
    start = time.perf_counter()
    nxt = model(ids, None, cache)[:, -1].argmax(-1)
    prefilled = time.perf_counter()
    out = [nxt]
    for _ in range(new - 1):
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        nxt = model(nxt[:, None] if use_cache else ids, None, cache)[:, -1].argmax(-1)
        out.append(nxt)
    return prefilled - start, time.perf_counter() - prefilled, torch.stack(out, 1).tolist()


def prompts(batch: int, length: int, seed: int = 0) -> np.ndarray:
    """(batch, length) printable-ASCII byte ids, the same for every model."""
    return np.random.default_rng(seed).integers(32, 127, (batch, length)).astype(np.int64)


def contenders(fp32, int8, model) -> dict:
    """The timed loops by name, each first checked to give real generation's tokens."""
    from corekit.generation import generate

    runs = {"edge fp32": (lambda ids, n: edge_loop(fp32, ids, n), fp32.generate),
            "edge int8": (lambda ids, n: edge_loop(int8, ids, n), int8.generate),
            "torch, KV cache": (lambda ids, n: torch_loop(model, ids, n, True),
                                lambda *a, **k: generate(model, *a, **k)),
            "torch, no cache": (lambda ids, n: torch_loop(model, ids, n, False),
                                lambda *a, **k: generate(model, *a, use_cache=False, **k))}
    check = prompts(2, PROMPT, seed=1)
    for name, (loop, real) in runs.items():
        if loop(check, 4)[2] != real(check.tolist(), max_new_tokens=4, temperature=0):
            raise SystemExit(f"{name}: the timing loop's tokens differ from real generation")
    return {name: loop for name, (loop, _) in runs.items()}


def interleaved(runs: dict, ids: np.ndarray, new: int, repeats: int) -> dict[str, list[tuple[float, float]]]:
    """Warm each contender up once, then run them in rotating order; (prefill, decode) seconds."""
    names = list(runs)
    for name in names:
        runs[name](ids, min(new, 8))
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            time.sleep(0.2)  # let the previous contender's spinning worker threads go idle
            times[name].append(runs[name](ids, new)[:2])
    return times


def export_both(run: Path, work: Path, label: str) -> tuple[Path, Path, object]:
    from corekit.export.bundle import export_run

    start = time.perf_counter()
    export_run(run, work / f"{label}-fp32")
    middle = time.perf_counter()
    report = export_run(run, work / f"{label}-int8", quantize="int8")
    print(f"exported {label}: fp32 {middle - start:.0f} s, int8 {time.perf_counter() - middle:.0f} s "
          f"(parity {report.parity['max_abs_logit_diff']:.1e})", flush=True)
    return work / f"{label}-fp32", work / f"{label}-int8", report


def gpt2_run(work: Path) -> Path:
    """A run directory holding examples/gpt2-small.toml's model, randomly initialised."""
    from corekit.assemble import build_model
    from corekit.plugins import get_registry
    from corekit.spec import load_spec
    from corekit.weights import save_weights

    registry, spec_file, run = get_registry(), ROOT / "examples" / "gpt2-small.toml", work / "gpt2-run"
    run.mkdir(parents=True, exist_ok=True)
    spec = load_spec(spec_file, registry=registry)
    shutil.copy(spec_file, run / "spec.toml")
    tokenizer = registry.build("tokenizer", spec.tokenizer)
    if tokenizer.needs_training:  # the example's "bytes" needs none; a trained one gets generated text
        tokenizer = tokenizer.train([f"def f{i}(x):\n    return x * {i} + {i * i}\n" for i in range(2000)])
    tokenizer.save(run / "tokenizer.json")
    torch.manual_seed(0)
    save_weights(build_model(spec.model, registry), spec, registry, run / "model.safetensors")
    return run


def quantize_dynamic_bundle(fp32: Path, out: Path) -> Path:
    """The fp32 bundle with its graph through plain quantize_dynamic, manifest re-hashed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from corekit.edge.manifest import MANIFEST, MODEL, file_entries

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(fp32, out)
    logging.disable(logging.WARNING)  # it logs every node at INFO
    try:
        quantize_dynamic(fp32 / MODEL, out / MODEL, op_types_to_quantize=["MatMul", "Gather"], per_channel=True,
                         weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"] = file_entries(out, sorted(manifest["files"]))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def graph_perplexity(edge, data: Path) -> float:
    """Validation perplexity of an EdgeModel's graph, scored as the export scores it."""
    from corekit.export.graph import CacheLayout
    from corekit.export.verify import OnnxLogits
    from corekit.train.evaluate import perplexity, validation_loss

    layout = CacheLayout(edge.n_layers, edge.n_kv_heads, edge.head_dim, torch.float32)
    logits = OnnxLogits(edge.path / "model.onnx", layout, edge.vocab_size, edge.context_length)
    return perplexity(validation_loss(logits, data, edge.context_length, max_windows=32))


def cache_check(edge, new: int) -> dict:
    """Per prompt, greedy with the cache against recomputing: the first differing new token (None: none);
    and the largest |logit| difference between feeding the cached path's sequence a token at a time and at once."""
    first, logit_diff = [], 0.0
    for text in CODE_PROMPTS:
        ids = edge.encode(text)
        cached = edge.generate([ids], max_new_tokens=new, temperature=0, use_cache=True)[0]
        recomputed = edge.generate([ids], max_new_tokens=new, temperature=0, use_cache=False)[0]
        first.append(next((i for i, (a, b) in enumerate(zip(cached, recomputed)) if a != b), None))
        seq = np.array([ids + cached])
        whole = edge.forward(seq, np.ones_like(seq), edge.empty_past(1))[0][0]  # (T, V)
        past, steps = edge.empty_past(1), []
        for t in range(seq.shape[1]):
            logits, past = edge.forward(seq[:, t:t + 1], np.ones((1, t + 1), np.int64), past)
            steps.append(logits[0, 0])
        logit_diff = max(logit_diff, float(np.abs(np.stack(steps) - whole).max()))
    return {"identical": sum(f is None for f in first), "prompts": len(first), "new_tokens": new,
            "first_difference": first, "max_abs_logit_diff": logit_diff}


def summarise(times: list[tuple[float, float]], tokens: int) -> dict:
    """Median and best (least disturbed) tokens/s of the decode loops, prefill in ms."""
    decode, prefill = [d for _, d in times], [p for p, _ in times]
    return {"tokens_per_s": tokens / statistics.median(decode), "best_tokens_per_s": tokens / min(decode),
            "prefill_ms": 1e3 * statistics.median(prefill), "best_prefill_ms": 1e3 * min(prefill),
            "decode_s": decode, "prefill_s": prefill}


def bench_model(label: str, run: Path, work: Path, args, new: int, repeats: int, check: bool) -> dict:
    from corekit.assemble import build_model
    from corekit.edge.runtime import EdgeModel
    from corekit.plugins import get_registry
    from corekit.spec import load_spec
    from corekit.weights import load_weights

    fp32_dir, int8_dir, report = export_both(run, work, label)
    registry = get_registry()
    spec = load_spec(run / "spec.toml", registry=registry)
    model = build_model(spec.model, registry)
    load_weights(model, run / "model.safetensors")
    model.eval()
    fp32, int8 = EdgeModel(fp32_dir, threads=args.threads), EdgeModel(int8_dir, threads=args.threads)
    runs = contenders(fp32, int8, model)
    r: dict = {"params": sum(p.numel() for p in model.parameters()), "context_length": model.context_length,
               "prompt": PROMPT, "new_tokens": new, "repeats": repeats, "decode": {},
               "ttft_prompt": min(TTFT_PROMPT, model.context_length - 1)}
    start = others_busy()
    for batch in BATCHES:
        times = interleaved(runs, prompts(batch, PROMPT), new, repeats)
        r["decode"][f"batch {batch}"] = {name: summarise(t, batch * (new - 1)) for name, t in times.items()}
    first = {name: runs[name] for name in ("edge fp32", "edge int8", "torch, KV cache")}
    r["ttft"] = {name: summarise(t, 1) for name, t in
                 interleaved(first, prompts(1, r["ttft_prompt"]), 1, repeats).items()}
    r["others_busy_cores"] = others_busy(start)

    def mib(path):
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) / 2**20

    r["sizes_mib"] = {"fp32": mib(fp32_dir), "int8": mib(int8_dir)}
    r["perplexity"] = dict(report.perplexity)
    if check:
        dyn_dir = quantize_dynamic_bundle(fp32_dir, work / f"{label}-quantize-dynamic")
        dyn = EdgeModel(dyn_dir, threads=args.threads)
        r["sizes_mib"]["quantize_dynamic"] = mib(dyn_dir)
        r["cache_check"] = {name: cache_check(edge, args.check_tokens)
                            for name, edge in (("fp32", fp32), ("int8", int8), ("quantize_dynamic", dyn))}
        if (run / "data" / "manifest.json").is_file():
            r["perplexity"]["quantize_dynamic"] = graph_perplexity(dyn, run / "data")
    return r


def show(label: str, r: dict) -> None:
    print(f"\n## {label}: {r['params'] / 1e6:.1f}M parameters, context {r['context_length']}, "
          f"{r['new_tokens']} new tokens after a {r['prompt']}-token prompt; median (best) of {r['repeats']}; "
          f"other processes kept {r['others_busy_cores']:.2f} cores busy meanwhile")
    print(f"| contender | batch 1 decode tok/s | batch 8 decode tok/s | prefill {r['prompt']} tok, "
          f"batch 1 / 8 (ms) | first token, {r['ttft_prompt']}-tok prompt (ms) |")
    print("| --- | --- | --- | --- | --- |")
    for name in r["decode"]["batch 1"]:
        d1, d8 = r["decode"]["batch 1"][name], r["decode"]["batch 8"][name]
        ttft = r["ttft"].get(name)
        print(f"| {name} | {d1['tokens_per_s']:,.1f} ({d1['best_tokens_per_s']:,.1f}) | "
              f"{d8['tokens_per_s']:,.1f} ({d8['best_tokens_per_s']:,.1f}) | "
              f"{d1['prefill_ms']:,.1f} / {d8['prefill_ms']:,.1f} | "
              + (f"{ttft['prefill_ms']:,.1f} ({ttft['best_prefill_ms']:,.1f}) |" if ttft else "as with the cache |"))
    s = r["sizes_mib"]
    print(f"bundle size: fp32 {s['fp32']:.2f} MiB, int8 {s['int8']:.2f} MiB ({s['fp32'] / s['int8']:.2f}x smaller)"
          + (f", plain quantize_dynamic {s['quantize_dynamic']:.2f} MiB" if "quantize_dynamic" in s else ""))
    if r.get("cache_check"):
        n = next(iter(r["cache_check"].values()))["new_tokens"]
        print(f"| graph | val perplexity | greedy {n} tokens, cache == recompute | first difference at token "
              "| max abs logit diff, one call vs a token at a time |")
        print("| --- | --- | --- | --- | --- |")
        for name, c in r["cache_check"].items():
            ppl = r["perplexity"].get({"fp32": "float32"}.get(name, name))
            print(f"| {name} | {'-' if ppl is None else f'{ppl:.3f}'} | {c['identical']}/{c['prompts']} prompts | "
                  f"{', '.join('-' if f is None else str(f) for f in c['first_difference'])} | "
                  f"{c['max_abs_logit_diff']:.2g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/tiny", help="trained run directory (corekit run examples/tiny.toml)")
    parser.add_argument("--skip-gpt2", action="store_true", help="only the tiny trained model")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens per row, tiny model")
    parser.add_argument("--gpt2-new-tokens", type=int, default=32, help="new tokens per row, gpt2-small shape")
    parser.add_argument("--repeats", type=int, default=5, help="timed turns per contender (median), tiny model")
    parser.add_argument("--gpt2-repeats", type=int, default=3, help="the same for the gpt2-small shape")
    parser.add_argument("--check-tokens", type=int, default=192, help="greedy tokens per prompt in the cache check")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and onnxruntime intra-op threads")
    parser.add_argument("--work", help="directory for the bundles (default: a temporary one, removed)")
    parser.add_argument("--out-json", help="also write every figure here")
    args = parser.parse_args()
    import onnxruntime
    import onnxruntime.quantization.matmul_nbits_quantizer

    # that import runs logging.basicConfig(level=INFO), after which every later export logs each pass
    logging.root.handlers.clear()
    logging.root.setLevel(logging.WARNING)

    torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, onnxruntime intra-op {args.threads}; {os.cpu_count()} CPU cores; "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}", flush=True)
    tmp = None if args.work else tempfile.mkdtemp(prefix="edge-speed-")
    work = Path(args.work or tmp)
    results: dict = {"threads": args.threads, "models": {}}
    try:
        models = [("tiny trained", Path(args.run), args.new_tokens, args.repeats, True)]
        if not args.skip_gpt2:
            models.append(("gpt2-small shape", gpt2_run(work), args.gpt2_new_tokens, args.gpt2_repeats, False))
        for label, run, new, repeats, check in models:
            results["models"][label] = r = bench_model(label.split()[0], run, work, args, new, repeats, check)
            show(label, r)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\n## summary (median figures)")
    for label, r in results["models"].items():
        speed = {b: {n: v["tokens_per_s"] for n, v in row.items()} for b, row in r["decode"].items()}
        gains = ", ".join(f"{b} {row['edge fp32'] / row['torch, KV cache']:.2f}x (fp32) / "
                          f"{row['edge int8'] / row['torch, KV cache']:.2f}x (int8)" for b, row in speed.items())
        ttft = {n: v["prefill_ms"] for n, v in r["ttft"].items()}
        print(f"{label}: edge decode vs torch with KV cache {gains}; first token "
              f"{ttft['torch, KV cache'] / ttft['edge fp32']:.2f}x (fp32) / "
              f"{ttft['torch, KV cache'] / ttft['edge int8']:.2f}x (int8) sooner; "
              f"int8 bundle {r['sizes_mib']['fp32'] / r['sizes_mib']['int8']:.2f}x smaller")
        if "cache_check" in r:
            print("  greedy decoding, cache == recompute: "
                  + ", ".join(f"{n} {c['identical']}/{c['prompts']} prompts" for n, c in r["cache_check"].items()))
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
