"""Wall time of an erase with the null-branch term beside the plain recipe's, in one run on this machine
(issue 26's cost bound: at most 2x). Each recipe erases the same digit without evaluation, alternately,
`--repeats` times; the medians are compared.

    python benchmarks/robustness/bench_null_cost.py [--digit 3] [--repeats 2] [--recipe configs/digits-robust.yaml]

Writes benchmarks/results/null-cost-cpu.json, with the load average at the start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import erasekit

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--digit", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--plain", default="configs/digits.yaml")
    parser.add_argument("--recipe", default="configs/digits-robust.yaml")
    args = parser.parse_args()
    walls: dict[str, list[float]] = {args.plain: [], args.recipe: []}
    load_start = os.getloadavg()
    for _ in range(args.repeats):
        for recipe in walls:
            with tempfile.TemporaryDirectory() as tmp:
                started = time.time()
                erasekit.erase(str(ROOT / recipe), forget=[args.digit], output_dir=str(Path(tmp) / "out"),
                               evaluate=False)
                walls[recipe].append(time.time() - started)
            print(recipe, f"{walls[recipe][-1]:.1f} s", flush=True)
    medians = {recipe: statistics.median(w) for recipe, w in walls.items()}
    out = {"digit": args.digit, "wall_s": walls, "median_s": medians,
           "ratio": medians[args.recipe] / medians[args.plain],
           "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "platform": platform.platform(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()}}
    (RESULTS / "null-cost-cpu.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"ratio {out['ratio']:.2f}")


if __name__ == "__main__":
    main()
