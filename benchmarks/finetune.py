"""Fine-tuning (issue 7): training throughput and peak memory of LoRA against full fine-tuning
of the same model, measured side by side in one run.

    python benchmarks/finetune.py [--shapes tiny gpt2] [--threads 2] [--rounds 3] [--steps N] [--warm N]
        [--template chatml] [--batch-size N] [--examples 600] [--max-busy 0.1] [--retries 2] [--work DIR]
        [--json PATH]

Shapes (``--shapes``, default ``tiny``), each written as a base run with random weights (seed 0;
throughput and memory do not depend on the weights): "tiny", ``examples/tiny.toml``'s model (0.8M
parameters, bytes tokenizer), and "gpt2", ``examples/gpt2-small.toml``'s (GPT-2 small, 124M
parameters, its 50,257-row tied embedding and LM head, bytes tokenizer; context 1024 kept, as the
examples are far shorter). The base run is what ``corekit finetune`` starts from: ``spec.toml``,
``tokenizer.json`` and ``model.safetensors``.

The job: instruction tuning (``task = "instruct"``, loss on response tokens only) on
:func:`corekit.finetune.synthetic.counting_jsonl` data (``--examples`` records, 10% held out),
rendered with the ``--template`` (default ``chatml``, as ``examples/finetune/count.toml``), batches
padded per batch to their longest row, AdamW (lr 1e-3, no weight decay, cosine schedule), the base
run's other ``[train]`` settings (grad clip 1.0, fp32). Methods:

- ``full``: full fine-tuning (``trainable_blocks = "all"``);
- ``LoRA r8, attention``: ``[finetune.adapter] name = "lora", rank = 8`` with its default targets
  (``*.attn.qkv``, ``*.attn.out``);
- ``LoRA r8, attention + MLP``: the same with ``targets = ["*.attn.qkv", "*.attn.out", "*.mlp.*"]``.

Each method runs in a fresh process (``--worker``; on the CPU, any GPU is hidden from it), which
does what ``corekit finetune`` does up to its training: :func:`corekit.finetune.run.load_finetune_spec`,
:func:`~corekit.finetune.run.prepare`, :func:`~corekit.finetune.run.build_model` (the adapter
applied and everything else frozen but the template's new tokens' rows), then
:func:`corekit.finetune.train._fit`, the Lightning ``Trainer`` of ``corekit finetune`` with the
spec's optimizer, schedule and loaders, for ``--warm`` + ``--steps`` optimizer steps. The one
addition is a timing callback, handed to the task through
``LightningModule.configure_callbacks`` (the benchmark wraps ``corekit.finetune.train._task``);
it also switches off the validation that ``_fit`` would run after the last step (it comes after
the measurements; ``limit_val_batches = 0``). The untimed evaluation before and after, saving and
the reload check of ``corekit finetune`` are left out.

Figures, per method:

- trainable parameters as ``corekit finetune`` reports them (:func:`~corekit.finetune.run.count`),
  and the elements of the tensors that get gradients: when the template brings tokens the base
  tokenizer lacks (chatml's two, on the bytes tokenizer; alpaca's ``<|endoftext|>`` is there
  already), their rows of the tied embedding train beside the adapter under a row mask, so the
  whole table gets a gradient and AdamW state, and the tied LM head's weight gradient is computed;
- analytic memory: fp32 weights (all parameters) + gradients + AdamW's two moments (3 x the
  elements with gradients), which is what LoRA saves;
- tokens/s over the ``--steps`` timed steps after ``--warm`` untimed ones: non-padding input
  tokens and padded tokens (batch x longest row) per second. A step's time runs from the end of
  the previous step to the end of this one (``on_train_batch_end``), so the loader's collation,
  forward, backward, gradient clipping, optimizer and schedule step and Lightning's hooks all
  count. Every method sees the same batches (same seed);
- peak memory: the peak resident set after the timed steps (``ru_maxrss``) minus the resident
  set just before the optimizer is built (the Trainer's ``setup``; the model, data and loaders
  exist then). The high-water mark is reset at that point (``/proc/self/clear_refs``), so the
  set-up's own peak (loading the weights) does not count; where the kernel refuses, the line
  under the table says so, and the growth is then an upper bound (it may be the set-up's peak).

``--rounds`` rounds run every method once, in an order that rotates by round; a figure is the
median over rounds, and "vs full" the median over rounds of the ratio to full fine-tuning in the
same round (the range over rounds in brackets). The cores other processes kept busy during each
method's timed steps are measured (``/proc/stat``): a method whose timing saw more than
``--max-busy`` of them is run again in its round, up to ``--retries`` times, and the least
disturbed attempt kept. The host is shared and noisy (with 2 threads on 2 cores, PyTorch slows
down many times over when another process takes one core), so compare the ratios, not figures
across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge_speed import others_busy

MIB = 2**20
#: name: (spec file, overrides, batch size, warm-up steps, timed steps)
SHAPES: dict[str, tuple[str, list[str], int, int, int]] = {
    "tiny": ("examples/tiny.toml", [], 32, 5, 20),
    "gpt2": ("examples/gpt2-small.toml", [], 8, 3, 8),
}
#: (key, label, [finetune.adapter] table or None for full fine-tuning)
METHODS: list[tuple[str, str, dict | None]] = [
    ("full", "full fine-tuning", None),
    ("lora-attn", "LoRA r8, attention", {"name": "lora", "rank": 8}),
    ("lora-all", "LoRA r8, attention + MLP",
     {"name": "lora", "rank": 8, "targets": ["*.attn.qkv", "*.attn.out", "*.mlp.*"]}),
]
PAD = 0  # collate_lm pads inputs with id 0 (the byte NUL, which the examples never hold)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- set-up (main process)


def base_run(shape: str, work: Path, registry) -> Path:
    """The shape's model, randomly initialised (seed 0), as a trained-looking run: spec, tokenizer, weights."""
    from corekit.assemble import build_model, build_tokenizer
    from corekit.rundir import RunDir
    from corekit.spec import load_spec
    from corekit.weights import save_weights

    path, overrides, *_ = SHAPES[shape]
    run = RunDir(work / f"base-{shape}")
    if (run.path / "model.safetensors").is_file() and run.stored_spec() is not None:
        return run.path
    spec = load_spec(ROOT / path, overrides, registry)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_spec(spec)
    build_tokenizer(spec, registry).save(run.tokenizer)
    torch.manual_seed(0)
    save_weights(build_model(spec, registry), spec, registry, run.path / "model.safetensors")
    return run.path


def toml_value(value) -> str:
    return json.dumps(value)  # strings, numbers and lists of strings are the same in TOML


def write_spec(path: Path, base: Path, data: Path, adapter: dict | None, template: str, batch: int,
               steps: int) -> Path:
    """A ``[finetune]`` spec file, as a user would write it."""
    lines = ["[finetune]", f"base = {toml_value(str(base))}", 'task = "instruct"', "",
             "[finetune.template]", f"name = {toml_value(template)}", ""]
    if adapter is not None:
        lines += ["[finetune.adapter]", *(f"{k} = {toml_value(v)}" for k, v in adapter.items()), ""]
    lines += ["[finetune.data]", f"train = {toml_value(str(data))}", "",
              "[train]", f"max_steps = {steps}", f"batch_size = {batch}", f"eval_every = {steps}", "",
              "[train.optimizer]", 'name = "adamw"', "lr = 1e-3", "weight_decay = 0.0", "",
              "[train.scheduler]", 'name = "cosine"', "warmup_steps = 1", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the worker (a fresh process)


def rss_now() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


def worker(spec_file: str, warm: int, steps: int, result: str) -> None:
    """One method's fine-tuning, timed and measured; the figures go to ``result`` (JSON)."""
    import lightning as L

    from corekit.finetune import train as ft_train
    from corekit.finetune.run import build_model, count, load_finetune_spec, prepare
    from corekit.plugins import get_registry

    registry = get_registry()
    spec, base, base_spec = load_finetune_spec(spec_file, (), registry)
    p = prepare(spec, base, base_spec, registry)
    if any(PAD in e.ids for e in p.train):
        raise SystemExit(f"an example holds token id {PAD}, the padding id: non-padding tokens cannot be counted")
    torch.manual_seed(spec.train.seed)
    setup = build_model(p, registry)  # as corekit finetune: adapter applied / frozen, grown rows trained
    trainable, total = count(setup)
    unique = {id(q): q for q in setup.model.parameters()}.values()
    with_grad = sum(q.numel() for q in unique if q.requires_grad)
    element = next(iter(unique)).element_size()
    fig: dict = {"trainable": trainable, "total": total, "with_grad": with_grad, "element_bytes": element,
                 "steps": [], "threads": torch.get_num_threads()}
    ends: list[float] = []

    class Clock(L.Callback):
        def setup(self, trainer, pl_module, stage) -> None:
            trainer.limit_val_batches = 0  # _fit validates after the last step: after the measurements
            fig["setup_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            fig["rss_before"] = rss_now()  # model, data and loaders exist; no optimizer, gradients, state
            fig["peak_reset"] = False
            with contextlib.suppress(OSError):  # the high-water mark so far is the set-up's (loading weights)
                Path("/proc/self/clear_refs").write_text("5")
                fig["peak_reset"] = True

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            inputs, targets = batch
            fig["steps"].append({"padded": inputs.numel(), "real": int((inputs != PAD).sum()),
                                 "response": int((targets != -100).sum())})

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            ends.append(time.perf_counter())
            if len(ends) == warm:
                fig["busy_since"] = others_busy()
            if len(ends) == warm + steps:
                fig["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                fig["others_busy"] = others_busy(fig.pop("busy_since"))

    make_task = ft_train._task

    def task_with_clock(*a, **k):
        task = make_task(*a, **k)
        task.configure_callbacks = lambda: [Clock()]
        return task

    ft_train._task = task_with_clock
    work = Path(tempfile.mkdtemp(prefix="finetune-bench-worker-"))
    try:
        _, done = ft_train._fit(p, setup, registry, work, progress=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if done != warm + steps or len(ends) != warm + steps:
        raise SystemExit(f"expected {warm + steps} steps, the Trainer ran {done}")
    for i, step in enumerate(fig["steps"]):
        step["seconds"] = ends[i] - ends[i - 1] if i else None
    fig["steps"] = fig["steps"][warm:]
    Path(result).write_text(json.dumps(fig), encoding="utf-8")


def run_worker(spec_file: Path, args, warm: int, steps: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result = Path(fh.name)
    cmd = [sys.executable, __file__, "--worker", str(spec_file), "--threads", str(args.threads),
           "--warm", str(warm), "--steps", str(steps), "--result", str(result)]
    try:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # a CPU benchmark: the resident set is the memory
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT, env=env)
        if done.returncode:
            raise SystemExit(f"worker failed ({' '.join(cmd)}):\n{done.stderr[-4000:]}")
        return json.loads(result.read_text())
    finally:
        result.unlink(missing_ok=True)


# --------------------------------------------------------------------------- figures


def summarise(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    """Per method: medians over rounds, and ratios to full fine-tuning paired by round."""
    out = {}
    for key, label, _ in METHODS:
        runs = [r[key] for r in rounds]
        first = runs[0]

        def rate(run, kind):
            return sum(s[kind] for s in run["steps"]) / sum(s["seconds"] for s in run["steps"])

        grown = [r["peak_rss"] - r["rss_before"] for r in runs]
        e = first["element_bytes"]
        out[key] = {
            "label": label, "trainable": first["trainable"], "total": first["total"], "with_grad": first["with_grad"],
            "weights_bytes": first["total"] * e, "grads_adamw_bytes": 3 * first["with_grad"] * e,
            "real_tokens_per_s": statistics.median(rate(r, "real") for r in runs),
            "padded_tokens_per_s": statistics.median(rate(r, "padded") for r in runs),
            "rss_before": statistics.median(r["rss_before"] for r in runs),
            "rss_growth": statistics.median(grown), "rss_growth_all": grown,
            "peak_reset": all(r["peak_reset"] for r in runs),
            "speed_ratio_all": [rate(r[key], "real") / rate(r["full"], "real") for r in rounds],
            "memory_ratio_all": [(r[key]["peak_rss"] - r[key]["rss_before"])
                                 / (r["full"]["peak_rss"] - r["full"]["rss_before"])
                                 for r in rounds],
            "tokens_per_step": {k: statistics.mean(s[k] for s in first["steps"])
                                for k in ("real", "padded", "response")},
            "others_busy": [r["others_busy"] for r in runs],
        }
    full = out["full"]
    for f in out.values():
        f["analytic_bytes"] = f["weights_bytes"] + f["grads_adamw_bytes"]
        f["analytic_ratio"] = f["analytic_bytes"] / full["analytic_bytes"]
        f["speed_ratio"] = statistics.median(f["speed_ratio_all"])
        f["memory_ratio"] = statistics.median(f["memory_ratio_all"])
    return out


def table(summary: dict[str, dict]) -> str:
    def spread(values):
        return f"{statistics.median(values):.2f}x" + (f" ({min(values):.2f}-{max(values):.2f})"
                                                      if len(values) > 1 else "")

    lines = [("| method | trainable params | with gradients | weights + grads + AdamW MiB | vs full | tokens/s, "
              "real (padded) | vs full | RSS before MiB | peak RSS growth MiB | vs full |"),
             "|" + " --- |" * 10]
    for f in summary.values():
        lines.append(
            f"| {f['label']} | {f['trainable']:,} ({f['trainable'] / f['total']:.2%}) | {f['with_grad']:,} "
            f"| {f['weights_bytes'] / MIB:,.1f} + {f['grads_adamw_bytes'] / MIB:,.1f} "
            f"= {f['analytic_bytes'] / MIB:,.1f} "
            f"| {f['analytic_ratio']:.2f}x | {f['real_tokens_per_s']:,.0f} ({f['padded_tokens_per_s']:,.0f}) "
            f"| {spread(f['speed_ratio_all'])} | {f['rss_before'] / MIB:,.0f} | {f['rss_growth'] / MIB:,.0f} "
            f"| {spread(f['memory_ratio_all'])} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["tiny"], help="tiny, gpt2 (space- or comma-separated)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads in every worker")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each running every method once")
    parser.add_argument("--steps", type=int, default=0, help="timed optimizer steps (0: 20 tiny, 8 gpt2)")
    parser.add_argument("--warm", type=int, default=0, help="untimed first steps (0: 5 tiny, 3 gpt2)")
    parser.add_argument("--max-busy", type=float, default=0.1,
                        help="run a method again when other processes kept more cores than this busy during its timed "
                             "steps (the least disturbed attempt is kept)")
    parser.add_argument("--retries", type=int, default=2, help="at most this many more attempts per method and round")
    parser.add_argument("--batch-size", type=int, default=0, help="examples per step (0: 32 tiny, 8 gpt2)")
    parser.add_argument("--template", default="chatml", help="chat template of the instruction data (chatml, alpaca)")
    parser.add_argument("--examples", type=int, default=600, help="counting_jsonl records (10%% held out)")
    parser.add_argument("--work", help="directory for the base runs, data and specs, kept and reused "
                                       "(default: a temporary one)")
    parser.add_argument("--json", help="also write every figure here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import lightning  # configures its loggers on import; quieten them after

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    if args.worker:
        worker(args.worker, args.warm, args.steps, args.result)
        return
    shapes = [s for arg in args.shapes for s in arg.split(",") if s]
    if bad := set(shapes) - set(SHAPES):
        parser.error(f"unknown shapes {sorted(bad)}; choose from {', '.join(SHAPES)}")

    from corekit.finetune.synthetic import counting_jsonl
    from corekit.plugins import get_registry

    registry = get_registry()
    print(f"threads: torch {torch.get_num_threads()}; {os.cpu_count()} CPU cores; torch {torch.__version__}, "
          f"lightning {lightning.__version__}; load average {os.getloadavg()[0]:.2f}", flush=True)
    tmp = None if args.work else tempfile.mkdtemp(prefix="finetune-bench-")
    work = Path(args.work or tmp).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"conditions": {"threads": args.threads, "cpu_cores": os.cpu_count(), "torch": torch.__version__,
                                    "lightning": lightning.__version__, "template": args.template,
                                    "load_average_at_start": os.getloadavg()}, "shapes": {}}
    started = time.perf_counter()
    try:
        data = counting_jsonl(work / f"count-{args.examples}.jsonl", n=args.examples)
        for shape in shapes:
            shape_start = time.perf_counter()
            _, _, batch, warm, steps = SHAPES[shape]
            batch, warm, steps = args.batch_size or batch, args.warm or warm, args.steps or steps
            base = base_run(shape, work, registry)
            specs = {key: write_spec(work / f"{shape}-{key}.toml", base, data, adapter, args.template, batch,
                                     warm + steps)
                     for key, _, adapter in METHODS}
            rounds: list[dict[str, dict]] = []
            discarded = 0
            for r in range(args.rounds):
                order = [k for k, _, _ in METHODS]
                order = order[r % len(order):] + order[:r % len(order)]
                got = {}
                for key in order:
                    attempts = []
                    for attempt in range(args.retries + 1):
                        t = time.perf_counter()
                        one = run_worker(specs[key], args, warm, steps)
                        attempts.append(one)
                        log(f"{shape} round {r + 1}/{args.rounds} {key}{f' (again, {attempt})' if attempt else ''}: "
                            f"{sum(s['real'] for s in one['steps']) / sum(s['seconds'] for s in one['steps']):,.0f} "
                            f"real tokens/s, peak growth {(one['peak_rss'] - one['rss_before']) / MIB:,.0f} MiB, "
                            f"others kept {max(one['others_busy'], 0):.2f} cores busy "
                            f"({time.perf_counter() - t:.0f} s)")
                        if one["others_busy"] <= args.max_busy:
                            break
                    got[key] = min(attempts, key=lambda a: a["others_busy"])  # the least disturbed attempt
                    discarded += len(attempts) - 1
                rounds.append(got)
            summary = summarise(rounds)
            seconds = time.perf_counter() - shape_start
            results["shapes"][shape] = {"base": str(base), "batch_size": batch, "warm": warm, "steps": steps,
                                        "rounds": rounds, "attempts_run_again": discarded, "summary": summary,
                                        "seconds": seconds}
            full = summary["full"]
            busy = [b for f in summary.values() for b in f["others_busy"]]
            per_step = full["tokens_per_step"]
            print(f"\n## {shape}: {full['total'] / 1e6:.2f}M parameters, {args.template} template, batch {batch}, "
                  f"{per_step['real']:.0f} real / {per_step['padded']:.0f} padded / {per_step['response']:.0f} "
                  f"response tokens per step on average\n")
            print(table(summary))
            print(f"\n{args.rounds} rounds x {warm} warm-up + {steps} timed steps per method, each method in a fresh "
                  f"process; other processes kept {max(statistics.median(busy), 0):.2f} cores busy (median; "
                  f"{max(min(busy), 0):.2f}-{max(max(busy), 0):.2f}) while timing"
                  + (f"; {discarded} busier attempt(s) were run again" if discarded else "")
                  + f"; {seconds / 60:.1f} min for this shape")
            if not all(f["peak_reset"] for f in summary.values()):
                print("the kernel refused to reset the resident-set high-water mark: the growth figures are upper "
                      "bounds (the peak may be the set-up's, loading the weights)")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    print(f"\ntotal {results['seconds'] / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
