"""What checksums cost on a large run: sha256 of a gpt2-small training checkpoint (weights plus
AdamW state) next to the time to save it, and the check a reader makes.

    python benchmarks/checksum_cost.py [--spec examples/gpt2-small.toml] [--repeats 3] [--dir DIR]

Prints one table, all figures taken side by side in one process (medians of ``--repeats``):
serialising the checkpoint (torch.save), writing it atomically (temp file, fsync, rename), its
sha256, the full checked save corekit makes (``AtomicCheckpointIO``), and verifying the file.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch

from corekit.assemble import build_model
from corekit.io import atomic_write_bytes, checksum_problem, file_sha256
from corekit.plugins import get_registry
from corekit.spec import load_spec
from corekit.train.checkpoint import AtomicCheckpointIO


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="examples/gpt2-small.toml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = parser.parse_args()

    registry = get_registry()
    spec = load_spec(args.spec, registry=registry)
    model = build_model(spec, registry)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for p in model.parameters():  # AdamW's state exists once it has stepped
        p.grad = torch.zeros_like(p)
    optimizer.step()
    checkpoint = {"global_step": 1, "state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]}

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getvalue()
    size_gb = len(data) / 1e9
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "last.ckpt"
        rows = {
            "torch.save into memory": _median(lambda: torch.save(checkpoint, io.BytesIO()), args.repeats),
            "atomic write (temp file, fsync, rename)": _median(lambda: atomic_write_bytes(path, data), args.repeats),
            "sha256 of the bytes": _median(lambda: hashlib.sha256(data).hexdigest(), args.repeats),
            "checked save (AtomicCheckpointIO: all of the above)":
                _median(lambda: AtomicCheckpointIO().save_checkpoint(checkpoint, path), args.repeats),
            "verify the file (read + sha256)": _median(lambda: checksum_problem(path), args.repeats),
            "sha256 of the file (file_sha256)": _median(lambda: file_sha256(path), args.repeats),
        }
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.spec}: {n_params / 1e6:.1f}M parameters, checkpoint {size_gb:.3f} GB (weights + AdamW state)")
    print("| step | median s | GB/s |")
    print("| --- | --- | --- |")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.3f} | {size_gb / seconds:.2f} |")
    save = rows["torch.save into memory"] + rows["atomic write (temp file, fsync, rename)"]
    print(f"sha256 adds {rows['sha256 of the bytes'] / save:.1%} to an unchecked save")


if __name__ == "__main__":
    main()
