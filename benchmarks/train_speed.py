"""Training throughput of spec-built models against a hand-written GPT of the same shape.

    python benchmarks/train_speed.py [--shapes tiny,6layer,gpt2] [--steps 30] [--compile] [--memory]

Three contenders train on the same random batches, interleaved step by step so that the
machine's noise (these hosts are shared) hits all of them alike: the Trainer runs a step, and
its callback then runs one step of each plain loop and one large matmul, in an order that
rotates from step to step.

- ``reference``: the minimal GPT of ``reference_gpt.py``, in the nanoGPT style (one ``nn.Module`` per
  part, ``F.scaled_dot_product_attention``, fused AdamW, the loss inside ``forward``), trained
  by a plain loop: forward, backward, clip, step, zero_grad.
- ``kit model``: the spec's model from :func:`corekit.build_model`, with the spec's optimizer
  and schedule plugins, trained by the same plain loop.
- ``kit trainer``: what ``corekit train`` runs, the :class:`LanguageModelTask` in a Lightning
  ``Trainer`` with the spec's settings (:func:`corekit.train.trainer.trainer_settings`: clipping,
  precision, deterministic algorithms on CPU), without the logger, checkpoints and progress bar.

Each contender's throughput is given at its median step and at its best (fastest) step; noise
only ever adds time, so the best steps are the least disturbed. "vs reference, paired" is the
median (and quartiles) of the per-step ratios, reference time over contender time, each pair
measured moments apart; "vs reference, best" is the ratio of the best steps. Before timing, the
reference is loaded with the kit model's weights and must give the same
logits: the shapes are identical, not just similar. Throughput is tokens/s of forward +
backward + optimizer step. Achieved FLOP/s counts 3x the forward FLOPs of
:func:`corekit.stats.flops_per_token` (backward costs twice the forward) and is compared with
the best of a large fp32 (GPU: bf16) matmul timed once per step in the same run: the
machine's practical peak.
On a CUDA GPU the run uses bf16 autocast (``bf16-mixed``) and prints MFU against the GPU's
published dense bf16 peak, looked up by the device's name (``--peak-tflops`` for others).

``--memory`` also measures peak memory, each contender in a fresh process: on CPU the growth of
the peak resident set over the process's size just before the first step (activations,
gradients and optimizer state), on CUDA ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_gpt import reference_from

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")

# name: (spec file, overrides, CPU batch size, GPU batch size)
SHAPES: dict[str, tuple[str, list[str], int, int]] = {
    "tiny": ("examples/tiny.toml", [], 16, 64),
    # nanoGPT's shakespeare-char shape: 6 layers, 6 heads, 384 wide, context 256, bytes vocabulary.
    "6layer": (
        "examples/gpt2-small.toml",
        ["model.n_layers=6", "model.d_model=384", "model.attention.n_heads=6", "model.context_length=256",
         "model.mlp.hidden_dim=1536", "model.vocab_size=257", "model.dropout=0.0"],
        16, 64,
    ),
    "gpt2": ("examples/gpt2-small.toml", ["model.dropout=0.0"], 2, 8),
}

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from NVIDIA's data sheets, matched
# against torch.cuda.get_device_name() in this order.
GPU_BF16_PEAK_TFLOPS: list[tuple[tuple[str, ...], float]] = [
    (("H200",), 989.4), (("GH200",), 989.4),
    (("H100", "NVL"), 835.0), (("H100", "PCIE"), 756.0), (("H100",), 989.4),
    (("B200",), 2250.0), (("A100",), 312.0), (("L40S",), 362.05), (("L40",), 181.05),
    (("A10G",), 70.0), (("A10",), 125.0), (("L4",), 121.0), (("RTX 4090",), 165.2),
]


# --------------------------------------------------------------------------- contenders


def autocast():
    return torch.autocast("cuda", dtype=torch.bfloat16) if CUDA else contextlib.nullcontext()


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


class PlainLoop:
    """A hand-written training loop over ``model``; ``loss_of(model, x, y)`` gives the loss."""

    def __init__(self, model, optimizer, scheduler, clip: float, loss_of) -> None:
        self.model, self.optimizer, self.scheduler, self.clip, self.loss_of = model, optimizer, scheduler, clip, loss_of

    def step(self, batch) -> float:
        """One optimizer step; returns its wall time in seconds."""
        deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(False)  # a Trainer on CPU switches it on process-wide
        sync()
        start = time.perf_counter()
        x, y = batch
        with autocast():
            loss = self.loss_of(self.model, x, y)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync()
        elapsed = time.perf_counter() - start
        torch.use_deterministic_algorithms(deterministic)
        return elapsed


def reference_contender(spec, kit_model, compiled: bool) -> PlainLoop:
    ref = reference_from(spec, kit_model)
    opt_spec = spec.train.optimizer
    optimizer = ref.configure_optimizers(opt_spec.weight_decay, opt_spec.lr, opt_spec.betas, opt_spec.eps)
    max_steps, warmup = spec.train.max_steps, 10

    def nanogpt_lr(step: int) -> float:  # nanoGPT's get_lr, applied by hand each step
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, max_steps - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, nanogpt_lr)
    model = torch.compile(ref) if compiled else ref
    return PlainLoop(model, optimizer, scheduler, spec.train.grad_clip, lambda m, x, y: m(x, y)[1])


def kit_contender(spec, registry, kit_model, compiled: bool) -> PlainLoop:
    optimizer = registry.build("optimizer", spec.train.optimizer, kit_model)
    scheduler = registry.build("scheduler", spec.train.scheduler, optimizer, spec.train.max_steps)
    model = torch.compile(kit_model) if compiled else kit_model

    def loss_of(m, x, y):
        return F.cross_entropy(m(x).flatten(0, 1).float(), y.flatten())

    return PlainLoop(model, optimizer, scheduler, spec.train.grad_clip, loss_of)


class TrainerContender:
    """``corekit train``'s module and Trainer settings (one ``Trainer.fit`` for the whole run)."""

    def __init__(self, spec, registry, kit_model) -> None:
        from corekit.train.module import LanguageModelTask

        self.spec = spec
        self.task = LanguageModelTask(kit_model, spec, registry)  # compiles its loss if spec.train.compile

    def fit(self, batches, steps: int, between=None) -> list[float]:
        """Train ``steps`` steps; returns each step's wall time, from the end of the previous
        step (after ``between(step)`` ran) to the end of this one, so Lightning's work between
        steps (fetching the batch, hooks, logging) counts."""
        import lightning as L

        from corekit.train.trainer import trainer_settings

        times: list[float] = []
        mark = [0.0]

        class Clock(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                if not mark[0]:  # the first step: start the clock
                    sync()
                    mark[0] = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                sync()
                times.append(time.perf_counter() - mark[0])
                if between is not None:
                    between(len(times) - 1)
                mark[0] = time.perf_counter()

        settings = trainer_settings(self.spec.train) | {"max_steps": steps}
        trainer = L.Trainer(**settings, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                            callbacks=[Clock()])
        loader = torch.utils.data.DataLoader([batches[i % len(batches)] for i in range(steps)], batch_size=None)
        trainer.fit(self.task, train_dataloaders=loader)
        return times


# --------------------------------------------------------------------------- measurement


class Matmul:
    """A large square matmul (fp32 on CPU, bf16 on GPU): the machine's practical peak."""

    def __init__(self) -> None:
        self.n = 8192 if CUDA else 2048
        dtype = torch.bfloat16 if CUDA else torch.float32
        self.a = torch.randn(self.n, self.n, device=DEVICE, dtype=dtype)
        self.b = torch.randn(self.n, self.n, device=DEVICE, dtype=dtype)
        self.reps = 8 if CUDA else 2

    def flops(self) -> float:
        """FLOP/s of ``reps`` back-to-back matmuls."""
        sync()
        start = time.perf_counter()
        for _ in range(self.reps):
            self.a @ self.b
        sync()
        return self.reps * 2 * self.n**3 / (time.perf_counter() - start)


def gpu_peak(override: float | None) -> tuple[str, float | None]:
    name = torch.cuda.get_device_name()
    if override:
        return name, override * 1e12
    upper = name.upper()
    for keys, tflops in GPU_BF16_PEAK_TFLOPS:
        if all(k in upper for k in keys):
            return name, tflops * 1e12
    return name, None


def setup(shape: str, compiled: bool):
    from corekit import build_model, load_spec
    from corekit.plugins import get_registry
    from corekit.stats import flops_per_token

    path, overrides, cpu_batch, gpu_batch = SHAPES[shape]
    extra = ["train.precision=bf16-mixed"] if CUDA else []
    spec = load_spec(ROOT / path, [*overrides, *extra, f"train.compile={str(compiled).lower()}"])
    registry = get_registry()
    torch.manual_seed(0)
    kit_model = build_model(spec, registry).to(DEVICE)
    batch = gpu_batch if CUDA else cpu_batch
    T = spec.model.context_length
    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(4):
        tokens = torch.randint(0, spec.model.vocab_size or kit_model.vocab_size, (batch, T + 1), generator=gen)
        batches.append((tokens[:, :-1].contiguous().to(DEVICE), tokens[:, 1:].contiguous().to(DEVICE)))
    flops = 3 * flops_per_token(kit_model, spec.model)
    return spec, registry, kit_model, batches, flops


def check_same_function(spec, kit_model, batches) -> float:
    """Largest logit difference between the kit model and the reference holding its weights."""
    ref = reference_from(spec, kit_model)
    x, y = batches[0]
    with torch.no_grad():
        diff = (kit_model.eval()(x) - ref.eval()(x, y)[0]).abs().max().item()
    kit_model.train()
    if diff > 1e-5:
        raise SystemExit(f"the reference does not compute the kit model's function (max logit difference {diff})")
    return diff


def contenders(spec, registry, kit_model, compiled: bool, only: str | None = None) -> dict[str, object]:
    import copy

    makers = {
        "reference": lambda: reference_contender(spec, kit_model, compiled),
        "kit model": lambda: kit_contender(spec, registry, copy.deepcopy(kit_model), compiled),
        "kit trainer": lambda: TrainerContender(spec, registry, copy.deepcopy(kit_model)),
    }
    return {name: make() for name, make in makers.items() if only in (None, name)}


def op_counts(runner: PlainLoop, batch) -> Counter:
    """How many times each aten op runs in one training step (forward, backward, optimizer)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runner.step(batch)
    return Counter({e.key: e.count for e in prof.key_averages() if e.key.startswith("aten::")})


def compare_ops(runners: dict[str, PlainLoop], batch) -> str:
    """One line: do the kit model and the reference run the same aten ops, as often?"""
    ref, kit = op_counts(runners["reference"], batch), op_counts(runners["kit model"], batch)
    differ = {op: (ref[op], kit[op]) for op in ref.keys() | kit.keys()
              if ref[op] != kit[op] and op not in ("aten::view", "aten::empty", "aten::as_strided")}
    head = f"aten ops per step: reference {sum(ref.values())}, kit model {sum(kit.values())}"
    if not differ:
        return head + "; the same ops, the same number of times (views and allocations aside)"
    return head + "; differing (reference, kit): " + ", ".join(f"{op} {a}/{b}" for op, (a, b) in sorted(differ.items()))


def bench_shape(shape: str, rounds: int, warm: int, compiled: bool, mfu_peak: float | None) -> None:
    """Interleaves the contenders step by step: the Trainer runs one step, then (from its
    callback) each plain loop one step and the matmul once, in an order that rotates."""
    spec, registry, kit_model, batches, flops = setup(shape, compiled)
    diff = check_same_function(spec, kit_model, batches)
    runners = contenders(spec, registry, kit_model, compiled)
    trainer = runners.pop("kit trainer")
    matmul = Matmul()
    matmul.flops()
    times: dict[str, list[float]] = {name: [] for name in [*runners, "kit trainer"]}
    peaks: list[float] = []

    def others(step: int) -> None:
        order = [*runners, "matmul"]
        for name in order[step % len(order):] + order[: step % len(order)]:
            if name == "matmul":
                peaks.append(matmul.flops())
            else:
                times[name].append(runners[name].step(batches[step % len(batches)]))

    times["kit trainer"] = trainer.fit(batches, warm + rounds, between=others)
    for name in times:
        times[name] = times[name][warm:]  # warm-up: allocator, optimizer state, compilation
    peaks = peaks[warm:]
    b, T = batches[0][0].shape
    tokens = b * T
    params = sum(p.numel() for p in kit_model.parameters())
    print(f"\n## {shape}: {params / 1e6:.1f}M parameters, batch {b} x {T}, "
          f"{'compiled' if compiled else 'eager'}, {rounds} interleaved steps each (max logit diff {diff:.1e})")
    if not compiled:
        print(compare_ops(runners, batches[0]))
    print(f"large {'bf16' if CUDA else 'fp32'} matmul ({matmul.n}), best: {max(peaks) / 1e12:.3f} TFLOP/s "
          f"(median {statistics.median(peaks) / 1e12:.3f})")
    print("| contender | tokens/s, median step | vs reference, paired (quartiles) | tokens/s, best step | "
          "vs reference, best | TFLOP/s, best | of matmul |" + (" MFU |" if mfu_peak else ""))
    print("| --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if mfu_peak else ""))
    best_peak = max(peaks)
    for name in ("reference", "kit model", "kit trainer"):
        # Paired: each step against the reference's step moments before or after it.
        ratios = [r / k for r, k in zip(times["reference"], times[name])]
        q1, q2, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
        # Best: noise only ever adds time, so the fastest step is the least disturbed one.
        best = tokens / min(times[name])
        row = (f"| {name} | {tokens / statistics.median(times[name]):,.0f} | {q2:.3f} ({q1:.3f} to {q3:.3f}) | "
               f"{best:,.0f} | {min(times['reference']) / min(times[name]):.3f} | {best * flops / 1e12:.3f} | "
               f"{best * flops / best_peak:.2f} |")
        print(row + (f" {best * flops / mfu_peak:.3f} |" if mfu_peak else ""), flush=True)


def memory_child(shape: str, name: str, compiled: bool) -> None:
    """Runs in a fresh process: peak memory of training ``name`` for a few steps."""
    import gc

    spec, registry, kit_model, batches, _ = setup(shape, compiled)
    runner = contenders(spec, registry, kit_model, compiled, only=name)[name]
    del kit_model
    gc.collect()
    if CUDA:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
        # ru_maxrss already holds the set-up's peak; reset the high-water mark where the kernel allows.
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
    if isinstance(runner, TrainerContender):
        runner.fit(batches, 3)
    else:
        for i in range(3):
            runner.step(batches[i])
    if CUDA:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _hwm() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"base": base, "peak": peak}))


def _hwm() -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def bench_memory(shape: str, compiled: bool) -> None:
    print(f"\n### peak memory, {shape} ({'compiled' if compiled else 'eager'}; "
          f"{'CUDA max_memory_allocated' if CUDA else 'growth of the resident set during 3 steps'})")
    print("| contender | before first step (MiB) | peak (MiB) | growth (MiB) |")
    print("| --- | --- | --- | --- |")
    for name in ("reference", "kit model", "kit trainer"):
        cmd = [sys.executable, __file__, "--memory-child", shape, name] + (["--compile"] if compiled else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        m = json.loads(out)
        mib = 1 << 20
        print(f"| {name} | {m['base'] / mib:,.0f} | {m['peak'] / mib:,.0f} | {(m['peak'] - m['base']) / mib:,.0f} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="tiny,6layer,gpt2")
    parser.add_argument("--steps", type=int, default=0, help="timed steps per contender (0: 30, or 8 for gpt2 on CPU)")
    parser.add_argument("--warm", type=int, default=2, help="untimed first steps (compilation happens here)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every contender")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (fresh processes)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU dense bf16 peak, if not in the table")
    parser.add_argument("--memory-child", nargs=2, metavar=("SHAPE", "CONTENDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import lightning  # noqa: F401  (configures its loggers on import; quieten them after)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    if args.memory_child:
        memory_child(*args.memory_child, args.compile)
        return
    mfu_peak = None
    if CUDA:
        name, mfu_peak = gpu_peak(args.peak_tflops)
        print(f"device: {name}; published dense bf16 peak "
              + (f"{mfu_peak / 1e12:.1f} TFLOP/s" if mfu_peak else "unknown (pass --peak-tflops for MFU)"))
    else:
        print(f"device: CPU, {torch.get_num_threads()} threads")
    print(f"torch {torch.__version__}")
    for shape in args.shapes.split(","):
        steps = args.steps or (8 if shape == "gpt2" and not CUDA else 30)
        bench_shape(shape, steps, args.warm, args.compile, mfu_peak)
        if args.memory:
            bench_memory(shape, args.compile)


if __name__ == "__main__":
    main()
