"""Wall time of an erase with the null-branch term beside the plain recipe's, in one run on this machine
(issue 26's cost bound: at most 2x). Each recipe erases the same digit without evaluation, alternately,
`--repeats` times; the medians are compared.

    python benchmarks/robustness/bench_null_cost.py [--digit 3] [--repeats 2] [--recipe configs/digits-robust.yaml]
        [--adversarial-rounds 2 [--adversarial-attack cce]]
    python benchmarks/robustness/bench_null_cost.py --plain configs/digits-t2i.yaml \
        --recipe configs/digits-t2i-robust.yaml --output null-cost-t2i-cpu.json

With `--adversarial-rounds`, the recipe with that many attack rounds in the loop is timed too. A text
recipe erases its own prompts (`--digit` is for class-conditional recipes).

Writes benchmarks/results/null-cost-cpu.json (or `--output`), with the load average at the start and end.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import erasekit
from erasekit.config import load_yaml
from erasekit.errors import ConfigError
from erasekit.io import write_json

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--digit", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--plain", default="configs/digits.yaml")
    parser.add_argument("--recipe", default="configs/digits-robust.yaml")
    parser.add_argument("--adversarial-rounds", type=int, default=0)
    parser.add_argument("--adversarial-attack", default="cce")
    parser.add_argument("--output", default="null-cost-cpu.json", help="file name under benchmarks/results")
    args = parser.parse_args()
    if Path(args.output).name != args.output:
        parser.error(f"--output {args.output}: give a file name (it is written under {RESULTS}), not a path")
    try:
        forget = {} if "forget_prompts" in load_yaml(ROOT / args.plain) else {"forget": [args.digit]}
    except ConfigError as exc:
        parser.error(f"--plain: {exc}")
    runs = {args.plain: (args.plain, {}), args.recipe: (args.recipe, {})}
    if args.adversarial_rounds:
        rounds = {"adversarial_rounds": args.adversarial_rounds, "adversarial_attack": args.adversarial_attack}
        runs[f"{args.recipe} + {args.adversarial_rounds} {args.adversarial_attack} rounds"] = (args.recipe, rounds)
    walls: dict[str, list[float]] = {name: [] for name in runs}
    load_start = os.getloadavg()
    for _ in range(args.repeats):
        for name, (recipe, overrides) in runs.items():
            with tempfile.TemporaryDirectory() as tmp:
                started = time.time()
                erasekit.erase(str(ROOT / recipe), output_dir=str(Path(tmp) / "out"), evaluate=False,
                               **forget, **overrides)
                walls[name].append(time.time() - started)
            print(name, f"{walls[name][-1]:.1f} s", flush=True)
    medians = {name: statistics.median(w) for name, w in walls.items()}
    out = {"digit": args.digit if forget else None, "wall_s": walls, "median_s": medians,
           "ratio": medians[args.recipe] / medians[args.plain],
           "ratios": {name: m / medians[args.plain] for name, m in medians.items()},
           "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                       "platform": platform.platform(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()}}
    write_json(RESULTS / args.output, out)
    print("ratios to the plain recipe: " + ", ".join(f"{n} {r:.2f}" for n, r in out["ratios"].items()))


if __name__ == "__main__":
    main()
