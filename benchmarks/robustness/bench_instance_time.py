"""Seconds per attack instance at the default budgets on this machine: `cce` on both bundled models,
`uda` on digits-t2i (the optimisation alone, and with the instance's generation and judging).

    python benchmarks/robustness/bench_instance_time.py [--instances 4]

Writes benchmarks/results/attack-instance-time-cpu.json, with the load average at the start and end:
a busy machine gives upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from erasekit.attacks import AttackRun, attack

RESULTS = Path(__file__).resolve().parents[1] / "results"
CASES = [("bundled:digits-cfg", "cce", {"forget": [3]}),
         ("bundled:digits-t2i", "cce", {"forget_prompts": ["a handwritten digit seven"]}),
         ("bundled:digits-t2i", "uda", {"forget_prompts": ["a handwritten digit seven"]})]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=4)
    args = parser.parse_args()
    rows, load_start = [], os.getloadavg()
    for model, name, target in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.time()
            attack(AttackRun(model=model, attack=[name], attack_base=False, instances=args.instances,
                             output=str(Path(tmp) / "out"), **target))
            total = time.time() - started
            lines = [json.loads(x) for x in (Path(tmp) / "out" / "attack.jsonl").read_text().splitlines()]
        optimise = [r["wall_s"] for r in lines]
        rows.append({"model": model, "attack": name, "instances": len(lines), "steps": lines[0]["steps"],
                     "optimise_s_mean": sum(optimise) / len(optimise), "optimise_s_max": max(optimise),
                     "run_s_per_instance": total / len(lines)})
        print(rows[-1], flush=True)
    out = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                       "loadavg_start": load_start, "loadavg_end": os.getloadavg()}, "rows": rows}
    (RESULTS / "attack-instance-time-cpu.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
