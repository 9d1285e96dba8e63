"""Wall time of `corekit plugins` (plugin discovery must stay cheap: no torch import).

Prints the median of several runs of each command, side by side in one run, so the
ratios are comparable on a noisy machine:

    python benchmarks/plugin_discovery.py [--runs 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    corekit = shutil.which("corekit") or sys.exit("corekit is not installed (pip install -e .)")
    rows = [
        ("python -c pass (interpreter start)", [sys.executable, "-c", "pass"]),
        ("corekit plugins", [corekit, "plugins"]),
        ("corekit plugins --json", [corekit, "plugins", "--json"]),
        ("python -c 'import torch' (for scale)", [sys.executable, "-c", "import torch"]),
    ]
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, corekit.cli.main as m; from corekit.plugins import get_registry;"
         " get_registry().components(); print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    print(f"torch imported by plugin discovery: {probe.stdout.strip()}")
    print(f"{'command':42s} {'median s':>9s}  (runs={args.runs})")
    for label, cmd in rows:
        print(f"{label:42s} {median_seconds(cmd, args.runs):9.3f}")


if __name__ == "__main__":
    main()
