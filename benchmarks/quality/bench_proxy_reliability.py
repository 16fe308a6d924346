"""Test-retest reliability of the memorization proxies on the bundled digits model.

A proxy ranks forget samples for RUM's low/medium/high split. A ranking that changes with the noise
seed splits the set at random. For each number of noise draws, both proxies (CFG gain and conditional
magnitude, from the same forward passes) score every training image of one class twice with disjoint
noise seeds; the Spearman correlation of the two passes is recorded per proxy, with the correlation of
the two proxies (first pass) and the wall time of both passes.

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


def proxies(stats: dict) -> dict:
    return {"loss": stats["conditional"], "cfg_gain": stats["unconditional"] - stats["conditional"],
            "cond_magnitude": stats["difference"]}


def main() -> None:
    from erasekit.erase.class_data import load_class_data
    from erasekit.erase.memorization import branch_statistics
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
        first, second = (proxies(branch_statistics(unet, task, images[picked], labels[picked], seed, draws))
                         for seed in (0, 100_000))
        rows.append({"draws": draws, **{f"spearman_{k}": round(spearman(first[k], second[k]), 4) for k in first},
                     "spearman_between_proxies": round(spearman(first["cfg_gain"], first["cond_magnitude"]), 4),
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
