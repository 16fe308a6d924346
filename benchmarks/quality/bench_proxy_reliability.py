"""Test-retest reliability of the CFG-gain memorization proxy on the bundled digits model.

The proxy ranks forget samples for RUM's low/medium/high split. A ranking that changes with the noise
seed splits the set at random. For each number of noise draws, the scores of every training image of
one class are computed twice with disjoint noise seeds, and the Spearman correlation of the two is
recorded with the wall time of both passes.

    python benchmarks/quality/bench_proxy_reliability.py [--forget 8] [--draws 8,32,64,128]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import torch

RESULTS = Path(__file__).parents[1] / "results"


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = (torch.argsort(torch.argsort(v)).double() for v in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def main() -> None:
    from erasekit.erase.class_data import load_class_data
    from erasekit.erase.memorization import cfg_gain
    from erasekit.erase.tasks import ClassConditionalTask
    from erasekit.pipelines.loading import load_pipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--forget", type=int, default=8)
    parser.add_argument("--draws", default="8,32,64,128")
    args = parser.parse_args()
    pipe = load_pipeline("bundled:digits-cfg")
    images, labels = load_class_data(SimpleNamespace(data="digits"), pipe)
    picked = labels == args.forget
    task = ClassConditionalTask.for_pipeline(pipe, images, labels, [args.forget])
    unet = pipe.unet.eval()
    rows = []
    for draws in (int(d) for d in args.draws.split(",")):
        started = time.time()
        first = cfg_gain(unet, task, images[picked], labels[picked], 0, draws)
        second = cfg_gain(unet, task, images[picked], labels[picked], 100_000, draws)
        rows.append({"draws": draws, "spearman": round(spearman(first, second), 4),
                     "seconds_both": round(time.time() - started, 1)})
        print(rows[-1], flush=True)
    out = {"date": time.strftime("%Y-%m-%d"), "machine": platform.node(), "threads": torch.get_num_threads(),
           "model": "bundled:digits-cfg", "class": args.forget, "samples": int(picked.sum()), "seeds": [0, 100_000],
           "command": "python benchmarks/quality/bench_proxy_reliability.py", "rows": rows}
    path = RESULTS / "proxy-reliability-digits.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
