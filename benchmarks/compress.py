"""Compression (issue 6): size, validation perplexity and CPU decode speed of a model and of
its compressed variants, in PyTorch and in onnxruntime, measured side by side in one run.

    python benchmarks/compress.py [--shapes tiny,gpt2] [--tiny-run runs/tiny] [--work DIR]
        [--threads N] [--rounds 11] [--gpt2-rounds 5] [--new-tokens 128] [--gpt2-new-tokens 32] [--json PATH]

Shapes: "tiny", the trained run ``--tiny-run`` (the README demo's ``corekit run examples/tiny.toml``;
trained into ``--work`` first when missing, ``--tiny-train-steps`` shortens that), and "gpt2-small
shape", ``examples/gpt2-small.toml``'s model randomly initialised (seed 0) and written as a run
(resolved spec, bytes tokenizer, the first ``--gpt2-documents`` documents of the embedded corpus
prepared as data, ``model.safetensors``). Its perplexity is a random model's: the point there is
size and speed.

Variants, each made by :func:`corekit.compress.run.compress_run` from the fp32 run: int8 (quantize,
per channel, dequantize-on-the-fly kernel), int8 with ``kernel=dynamic`` (torch.ao; PyTorch only:
its integers, hence its ONNX bundle, are int8's), int4 (groups of 64), 50% unstructured magnitude
pruning, 25% structured pruning (heads/KV groups and MLP neurons; no recovery), and a half-depth
student distilled from the run (tiny: ``--tiny-distill-steps``, default the teacher's max_steps;
gpt2: ``--gpt2-distill-steps``, default 4 steps of batch ``--gpt2-batch-size``: untrained, size and
speed only).

Two onnxruntime-only rows take the int8 and int4 bundles with their ``MatMulNBits`` nodes switched
from ``accuracy_level`` 0 (fp32 activations: what the export of a quantized run writes, the same
function as the PyTorch model) to 4 (activations quantized to int8 inside the kernel, as
``corekit export --quantize int8`` does); their perplexity is the graph's, on the same windows.

Figures: parameters (and non-zero ones), ``model.safetensors`` size, validation perplexity on the
same windows for every variant (``--val-windows``, ``--gpt2-val-windows``), mean KL(fp32 || variant)
of next-token distributions on 8 validation windows (compress_run's), ONNX graph size (``model.onnx``
plus external data, by :func:`corekit.export.bundle.export_run`), and greedy decode tokens/s at
batch 1 on the CPU: one prefill of a ``--prompt``-token prompt, then ``--new-tokens`` (gpt2:
``--gpt2-new-tokens``) one-token steps with the KV cache; tokens/s = new tokens / seconds, by
:func:`corekit.compress.measure.decode_speed` in PyTorch and :meth:`EdgeModel.generate` with
``max_new_tokens = new + 1`` (the same calls) in onnxruntime. Each round times every PyTorch model,
then every onnxruntime model, each in an order rotating by round; figures are the median (and
best) over rounds after a warm-up, and "vs fp32" is the median over rounds of the ratio to fp32 in
the same round and runtime. Both runtimes get ``--threads`` intra-op threads (default: every core).
Other processes wreck these figures on 2-core hosts (PyTorch's OpenMP threads above all), so the
cores they kept busy during the timing are printed.

With ``--work``, runs and bundles already there (made from the same weights with the same
settings) are reused and only the timing is redone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge_speed import others_busy

MIB = 2**20
#: (key, label, compressor, fields); "distill" fields are filled in per shape
VARIANTS = [
    ("fp32", "fp32", None, {}),
    ("int8", "int8", "quantize", {"bits": 8}),
    ("int8-dynamic", "int8, kernel=dynamic", "quantize", {"bits": 8, "kernel": "dynamic"}),
    ("int4", "int4 (groups of 64)", "quantize", {"bits": 4}),
    ("prune50", "50% unstructured", "prune", {"method": "unstructured", "sparsity": 0.5}),
    ("struct25", "25% structured", "prune", {"method": "structured", "sparsity": 0.25}),
    ("distill", "distilled half-depth", "distill", {}),
]
#: variants whose ONNX bundle is another's (same stored integers)
SAME_BUNDLE = {"int8-dynamic": "int8"}
#: onnxruntime-only rows: (key, label, variant) = that variant's bundle with its MatMulNBits nodes set to
#: accuracy_level 4 (int8 activations), which the export of a quantized run leaves at 0 (fp32 activations)
ACC4 = [("int8-acc4", "int8, onnxruntime accuracy_level=4", "int8"),
        ("int4-acc4", "int4, onnxruntime accuracy_level=4", "int4")]


def log(console, message: str) -> None:
    console.log(message, markup=False, highlight=False)


def tiny_run(args, work: Path, console) -> Path:
    """``--tiny-run``, trained into ``work/tiny`` by ``corekit run examples/tiny.toml`` when missing."""
    run = Path(args.tiny_run)
    if (run / "model.safetensors").is_file():
        return run
    run = (work / "tiny").resolve()
    if (run / "model.safetensors").is_file():
        return run
    cmd = [sys.executable, "-m", "corekit", "run", str(ROOT / "examples" / "tiny.toml"), "--run-dir", str(run)]
    if args.tiny_train_steps:
        cmd += ["--set", f"train.max_steps={args.tiny_train_steps}"]
    log(console, f"{args.tiny_run} has no trained model: training one, {' '.join(cmd[1:])}"
        + (f" (SHORTENED to {args.tiny_train_steps} steps)" if args.tiny_train_steps else ""))
    subprocess.run(cmd, check=True, cwd=ROOT)
    return run


def gpt2_run(args, work: Path, registry, console) -> Path:
    """examples/gpt2-small.toml's model, randomly initialised (seed 0), as a run with prepared data."""
    from corekit.assemble import build_model
    from corekit.rundir import RunDir, ensure_tokenizer, prepare_data
    from corekit.spec import load_spec
    from corekit.weights import save_weights

    spec = load_spec(ROOT / "examples" / "gpt2-small.toml", [f"data.max_documents={args.gpt2_documents}",
                     f"train.batch_size={args.gpt2_batch_size}"], registry)
    run = RunDir(work / "gpt2")
    if (run.path / "model.safetensors").is_file() and run.stored_spec() is not None:
        return run.path
    run.path.mkdir(parents=True, exist_ok=True)
    tokenizer, _ = ensure_tokenizer(spec, run, registry)
    log(console, f"gpt2: preparing the first {args.gpt2_documents} documents of the embedded corpus")
    prepare_data(spec, run, tokenizer)
    torch.manual_seed(0)
    save_weights(build_model(spec, registry), spec, registry, run.path / "model.safetensors")
    return run.path


def make_variants(shape: str, source: Path, args, work: Path, registry, progress, task, console) -> dict:
    """Each variant's run directory and compress report (the fp32 run itself for "fp32")."""
    from corekit.compress.run import (
        REPORT,
        compress_run,
        compressor_params,
        report_is_current,
    )
    from corekit.spec import load_spec

    spec = load_spec(source / "spec.toml", registry=registry)
    windows = args.val_windows if shape == "tiny" else args.gpt2_val_windows
    steps = (args.tiny_distill_steps or spec.train.max_steps) if shape == "tiny" else args.gpt2_distill_steps
    out: dict = {"fp32": {"run": source}}
    for key, label, name, fields in VARIANTS[1:]:
        if key == "distill":
            fields = {"student": {"n_layers": spec.model.n_layers // 2}, "steps": steps}
        if key == "int8-dynamic" and args.no_dynamic:
            continue
        params = compressor_params(name, registry=registry, fields=fields)
        run = work / f"{shape}-{key}"
        if report_is_current(run, source / "model.safetensors", params):
            report = json.loads((run / REPORT).read_text())
            log(console, f"{shape} {label}: reusing {run}")
        else:
            start = time.perf_counter()
            report = compress_run(source, params, run, registry=registry, measure_speed=False, val_windows=windows,
                                  progress=lambda m, s=f"{shape} {label}": log(console, f"{s}: {m}"))
            report["seconds"] = time.perf_counter() - start
            log(console, f"{shape} {label}: made in {report['seconds']:.0f} s")
        out[key] = {"run": run, "report": report}
        progress.advance(task)
    return out


def export_variants(shape: str, variants: dict, work: Path, registry, windows: int, progress, task, console) -> None:
    """An fp32-activation ONNX bundle of each variant (quantized runs keep their integers)."""
    from corekit.export.bundle import bundle_is_current, export_run

    for key, v in variants.items():
        if key in SAME_BUNDLE:
            progress.advance(task)
            continue
        bundle = work / f"{shape}-{key}-onnx"
        if bundle_is_current(bundle, v["run"] / "model.safetensors", quantize="none", opset=None):
            log(console, f"{shape} {key}: reusing bundle {bundle}")
        else:
            start = time.perf_counter()
            report = export_run(v["run"], bundle, registry=registry, val_windows=windows,
                                progress=lambda m, s=f"{shape} {key} export": log(console, f"{s}: {m}"))
            v["export"] = {"seconds": time.perf_counter() - start, "parity": report.parity,
                           "graph_perplexity": report.perplexity, "notes": report.notes}
            log(console, f"{shape} {key}: exported in {v['export']['seconds']:.0f} s, parity "
                f"{report.parity['max_abs_logit_diff']:.1e}")
        v["bundle"] = bundle
        v["onnx_bytes"] = sum(p.stat().st_size for p in bundle.glob("model.onnx*"))
        progress.advance(task)
    for key, other in SAME_BUNDLE.items():
        if key in variants:
            variants[key]["bundle_of"] = other
    for key, _, base in ACC4:
        bundle = relevel_bundle(variants[base]["bundle"], work / f"{shape}-{key}-onnx", 4)
        log(console, f"{shape} {key}: scoring the graph's validation perplexity")
        variants[key] = {"bundle": bundle, "onnx_bytes": sum(p.stat().st_size for p in bundle.glob("model.onnx*")),
                         "graph_perplexity": graph_perplexity(bundle, variants["fp32"]["run"] / "data", windows),
                         "base": base}
        progress.advance(task)


def relevel_bundle(src: Path, dst: Path, level: int) -> Path:
    """A copy of the bundle ``src`` whose MatMulNBits nodes have ``accuracy_level = level``, manifest re-hashed."""
    import onnx

    from corekit.edge.manifest import MANIFEST, MODEL, file_entries
    from corekit.export.quantize import SAVE_EXTERNAL_ABOVE

    if (dst / MANIFEST).is_file():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("model.onnx*"))
    graph = onnx.load(str(src / MODEL))
    for node in graph.graph.node:
        for attr in node.attribute if node.op_type == "MatMulNBits" else ():
            if attr.name == "accuracy_level":
                attr.i = level
    external = graph.ByteSize() > SAVE_EXTERNAL_ABOVE
    onnx.save(graph, str(tmp / MODEL), save_as_external_data=external, location=MODEL + ".data" if external else None)
    manifest = json.loads((tmp / MANIFEST).read_text())
    manifest["files"] = file_entries(tmp, sorted(p.name for p in tmp.iterdir() if p.name != MANIFEST))
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.rename(dst)
    return dst


def graph_perplexity(bundle: Path, data: Path, windows: int) -> float:
    """Validation perplexity of a bundle's graph on the run's first ``windows`` val windows."""
    from corekit.edge.manifest import MODEL
    from corekit.export.graph import CacheLayout
    from corekit.export.verify import OnnxLogits
    from corekit.train.evaluate import perplexity, validation_loss

    manifest = json.loads((bundle / "corekit-export.json").read_text())
    cache, model = manifest["cache"], manifest["model"]
    layout = CacheLayout(cache["n_layers"], cache["n_kv_heads"], cache["head_dim"], torch.float32)
    logits = OnnxLogits(bundle / MODEL, layout, model["vocab_size"], model["context_length"])
    return perplexity(validation_loss(logits, data, model["context_length"], max_windows=windows))


def time_decoding(variants: dict, vocab: int, args, rounds: int, new: int, registry, progress, task) -> dict:
    """Median greedy decode tokens/s per variant, PyTorch and onnxruntime, interleaved by round."""
    from corekit.run import load_run_model
    from corekit.compress.measure import decode_speed
    from corekit.edge.runtime import EdgeModel
    from corekit.spec import load_spec

    torch_models = {k: load_run_model(load_spec(v["run"] / "spec.toml", registry=registry),
                                      v["run"] / "model.safetensors", registry).eval()
                    for k, v in variants.items() if "run" in v}
    edges = {k: EdgeModel(v["bundle"], threads=args.threads) for k, v in variants.items() if "bundle" in v}
    ids = torch.randint(vocab, (1, args.prompt), generator=torch.Generator().manual_seed(0))  # decode_speed's prompt
    prompt = ids[0].tolist()

    def edge_once(edge, new: int) -> float:
        start = time.perf_counter()
        edge.generate([prompt], max_new_tokens=new + 1, temperature=0)  # prefill + `new` steps, as decode_speed
        return time.perf_counter() - start

    decode_speed(torch_models, vocab, prompt=args.prompt, new_tokens=4, rounds=1)  # warm-up
    for edge in edges.values():
        edge_once(edge, 4)
    speeds: dict[str, dict[str, list[float]]] = {"torch": {k: [] for k in torch_models}, "onnx": {k: [] for k in edges}}
    busy_since = others_busy()
    for r in range(rounds):
        order = list(torch_models)[r % len(torch_models):] + list(torch_models)[:r % len(torch_models)]
        time.sleep(0.2)
        got = decode_speed({k: torch_models[k] for k in order}, vocab, prompt=args.prompt,
                           new_tokens=new, rounds=1)
        for k, s in got.items():
            speeds["torch"][k].append(s)
        for k in list(edges)[r % len(edges):] + list(edges)[:r % len(edges)]:
            time.sleep(0.2)  # let the previous contender's spinning threads go idle
            speeds["onnx"][k].append(new / edge_once(edges[k], new))
        progress.advance(task)
    busy = others_busy(busy_since)
    return {"others_busy_cores": busy, "rounds": rounds, "prompt": args.prompt, "new_tokens": new,
            "torch": {k: statistics.median(v) for k, v in speeds["torch"].items()},
            "onnx": {k: statistics.median(v) for k, v in speeds["onnx"].items()},
            "torch_all": speeds["torch"], "onnx_all": speeds["onnx"]}


def paired(timing: dict, runtime: str, key: str) -> float | None:
    """Median over rounds of the variant's tokens/s over fp32's in the same round and runtime."""
    mine, base = timing[f"{runtime}_all"].get(key), timing[f"{runtime}_all"].get("fp32")
    return statistics.median(a / b for a, b in zip(mine, base)) if mine and base else None


def rows(shape: str, variants: dict, timing: dict) -> list[dict]:
    """One flat row of figures per variant."""
    fp32 = next(v["report"]["before"] for v in variants.values() if "report" in v)
    out = []
    for key, label, _, _ in VARIANTS:
        if key not in variants:
            continue
        v = variants[key]
        fig = v["report"]["after"] if "report" in v else fp32
        bundle = variants[v.get("bundle_of", key)]
        out.append({
            "key": key, "variant": label, "parameters": fig["parameters"],
            "nonzero_parameters": fig["nonzero_parameters"], "weight_bytes": fig["weight_bytes"],
            "of_fp32": fig["weight_bytes"] / fp32["weight_bytes"], "val_perplexity": fig.get("val_perplexity"),
            "kl_from_fp32": v["report"].get("kl_from_source") if "report" in v else None,
            "torch_tokens_per_s": timing["torch"].get(key),
            "torch_best": max(timing["torch_all"].get(key) or [0]) or None,
            "torch_vs_fp32": paired(timing, "torch", key),
            "onnx_bytes": bundle.get("onnx_bytes"),
            "onnx_of_fp32": bundle["onnx_bytes"] / variants["fp32"]["onnx_bytes"] if "onnx_bytes" in bundle else None,
            "onnx_tokens_per_s": timing["onnx"].get(v.get("bundle_of", key)) if key not in SAME_BUNDLE else None,
            "onnx_best": max(timing["onnx_all"].get(key) or [0]) or None, "onnx_same_as": v.get("bundle_of"),
            "onnx_vs_fp32": paired(timing, "onnx", key) if key not in SAME_BUNDLE else None,
            "details": v["report"].get("details") if "report" in v else None,
            "compress_seconds": v["report"].get("seconds") if "report" in v else None,
            "export": v.get("export"),
        })
        for extra, extra_label, base in ACC4:
            if base == key and extra in variants:
                e = variants[extra]
                out.append({**out[-1], "key": extra, "variant": extra_label, "val_perplexity": e["graph_perplexity"],
                            "perplexity_of": "onnx graph", "kl_from_fp32": None, "torch_tokens_per_s": None,
                            "torch_best": None, "torch_vs_fp32": None, "onnx_bytes": e["onnx_bytes"],
                            "onnx_vs_fp32": paired(timing, "onnx", extra),
                            "onnx_of_fp32": e["onnx_bytes"] / variants["fp32"]["onnx_bytes"],
                            "onnx_tokens_per_s": timing["onnx"].get(extra),
                            "onnx_best": max(timing["onnx_all"].get(extra) or [0]) or None, "export": None})
    return out


def table(shape: str, figures: list[dict]) -> str:
    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    def speed(median, best, ratio):
        return "- | -" if median is None else f"{median:,.1f} ({best:,.1f}) | {ratio:.2f}x"

    header = ("| variant | params | non-zero | weights MiB | of fp32 | val ppl | KL from fp32 | PyTorch tok/s, median "
              "(best) | vs fp32 | ONNX MiB | of fp32 | onnxruntime tok/s, median (best) | vs fp32 |")
    lines = [header, "|" + " --- |" * 13]
    for f in figures:
        same = f["onnx_same_as"]
        lines.append(
            f"| {f['variant']} | {f['parameters'] / 1e6:.2f}M | {f['nonzero_parameters'] / 1e6:.2f}M "
            f"| {f['weight_bytes'] / MIB:.2f} | {f['of_fp32']:.1%} "
            f"| {num(f['val_perplexity'], '.3f' if shape == 'tiny' else ',.0f')}"
            f"{' (graph)' if f.get('perplexity_of') else ''} "
            f"| {num(f['kl_from_fp32'], '.2g')} "
            f"| {speed(f['torch_tokens_per_s'], f['torch_best'], f['torch_vs_fp32'])} "
            + (f"| (the {same} bundle) | | | |" if same else
               f"| {num(f['onnx_bytes'] and f['onnx_bytes'] / MIB, '.2f')} | {num(f['onnx_of_fp32'], '.1%')} "
               f"| {speed(f['onnx_tokens_per_s'], f['onnx_best'], f['onnx_vs_fp32'])} |"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,gpt2", help="comma-separated: tiny, gpt2")
    parser.add_argument("--tiny-run", default="runs/tiny", help="trained tiny run (corekit run examples/tiny.toml)")
    parser.add_argument("--tiny-train-steps", type=int, help="when the tiny run must be trained: shorten it to N steps")
    parser.add_argument("--tiny-distill-steps", type=int, help="student training steps (default: teacher's max_steps)")
    parser.add_argument("--gpt2-distill-steps", type=int, default=4, help="gpt2-shape student steps (untrained)")
    parser.add_argument("--gpt2-batch-size", type=int, default=2, help="train.batch_size of the gpt2-shape run")
    parser.add_argument("--gpt2-documents", type=int, default=300, help="data.max_documents of the gpt2-shape run")
    parser.add_argument("--val-windows", type=int, default=64, help="validation windows scored, tiny")
    parser.add_argument("--gpt2-val-windows", type=int, default=8, help="validation windows scored, gpt2 shape")
    parser.add_argument("--rounds", type=int, default=11, help="timed rounds, tiny (median)")
    parser.add_argument("--gpt2-rounds", type=int, default=5, help="timed rounds, gpt2 shape (median)")
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    parser.add_argument("--new-tokens", type=int, default=128, help="new tokens per timed decode, tiny")
    parser.add_argument("--gpt2-new-tokens", type=int, default=32, help="the same for the gpt2 shape")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and onnxruntime intra-op threads")
    parser.add_argument("--no-dynamic", action="store_true", help="skip the int8 kernel=dynamic variant")
    parser.add_argument("--work", help="directory for the runs and bundles, kept and reused (default: a temporary one)")
    parser.add_argument("--json", help="also write every figure here")
    args = parser.parse_args()
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if bad := set(shapes) - {"tiny", "gpt2"}:
        parser.error(f"unknown shapes {sorted(bad)}; choose from tiny, gpt2")

    import onnxruntime
    import onnxruntime.quantization.matmul_nbits_quantizer  # imported now so that its logging setup is undone below
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from corekit.plugins import get_registry

    # that import runs logging.basicConfig(level=INFO), after which every export logs each pass
    logging.root.handlers.clear()
    logging.root.setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    console = Console(stderr=True)
    registry = get_registry()
    tmp = None if args.work else tempfile.mkdtemp(prefix="compress-bench-")
    work = Path(args.work or tmp)
    work.mkdir(parents=True, exist_ok=True)
    conditions = {"threads": args.threads, "torch_threads": torch.get_num_threads(), "cpu_cores": os.cpu_count(),
                  "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                  "load_average_at_start": os.getloadavg()}
    print(f"threads: torch {torch.get_num_threads()}, onnxruntime intra-op {args.threads}; {os.cpu_count()} CPU cores; "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; load average {os.getloadavg()[0]:.2f}",
          flush=True)
    results: dict = {"conditions": conditions, "shapes": {}}
    started = time.perf_counter()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console) as progress:
            for shape in shapes:
                shape_start = time.perf_counter()
                source = tiny_run(args, work, console) if shape == "tiny" else gpt2_run(args, work, registry, console)
                n = len(VARIANTS) - args.no_dynamic
                rounds = args.rounds if shape == "tiny" else args.gpt2_rounds
                task = progress.add_task(f"{shape}: compress, export, time", total=(n - 1) + n + len(ACC4) + rounds)
                variants = make_variants(shape, source, args, work, registry, progress, task, console)
                windows = args.val_windows if shape == "tiny" else args.gpt2_val_windows
                export_variants(shape, variants, work, registry, windows, progress, task, console)
                log(console, f"{shape}: timing decoding, {rounds} rounds after a warm-up")
                vocab = json.loads(
                    (variants["fp32"]["bundle"] / "corekit-export.json").read_text()
                )["model"]["vocab_size"]
                new = args.new_tokens if shape == "tiny" else args.gpt2_new_tokens
                timing = time_decoding(variants, vocab, args, rounds, new, registry, progress, task)
                figures = rows(shape, variants, timing)
                results["shapes"][shape] = {"source": str(source), "val_windows": windows, "vocab_size": vocab,
                                            "seconds": time.perf_counter() - shape_start, "timing": timing,
                                            "variants": figures}
                label = "tiny trained" if shape == "tiny" else "gpt2-small shape (random weights)"
                print(f"\n## {label}: {source}\n")
                print(table(shape, figures))
                print(f"\n{rounds} rounds of {args.prompt}-token prompt + {new} new tokens, batch 1, greedy; other "
                      f"processes kept {timing['others_busy_cores']:.2f} cores busy while timing; "
                      f"{results['shapes'][shape]['seconds'] / 60:.1f} min for this shape", flush=True)
                if shape == "gpt2":
                    print("perplexity and KL: a randomly initialised model's; the distilled row is "
                          f"{args.gpt2_distill_steps} steps of training: size and speed only")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    print(f"\ntotal {results['seconds'] / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
