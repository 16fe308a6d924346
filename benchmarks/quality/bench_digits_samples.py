"""Sample unlearning on the bundled digits model: forget a random 10% of the training images (every
class), measured against retraining without them by the loss-based membership test.

Each method erases the same images (`forget_samples: 0.1`, `forget_samples_seed` 0) with
`erasekit.erase`, whose evaluation is the membership test on the base and on the result: the AUC of
"lower denoising loss means trained on" separating forget images from the 360 held-out test images
(retrain is the target), the same AUC for retain images (the generalisation gap, which unlearning should
leave alone), and the mean losses. Rows are appended to a JSON-lines file and skipped when present.

    python benchmarks/quality/bench_digits_samples.py --methods retrain,salun,rl,ga,salun-rum
    python benchmarks/quality/bench_digits_samples.py --report
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]
RESULTS = Path(__file__).parents[1] / "results"
ROWS = RESULTS / "quality-digits-samples.jsonl"
RECIPES = {  # method -> (config file, overrides)
    "salun": ("configs/digits-samples.yaml", {}),
    "rl": ("configs/digits-samples.yaml", {"method": "rl"}),
    "ga": ("configs/digits-samples.yaml", {"method": "ga", "max_steps": 30}),
    "salun-rum": ("configs/digits-samples.yaml", {"refine": "rum", "refine_steps": [0, 150, 150]}),
    "salun-rum-cfg_gain": ("configs/digits-samples.yaml", {"refine": "rum", "refine_steps": [0, 150, 150],
                                                           "refine_proxy": "cfg_gain"}),
    "retrain": ("configs/digits-retrain.yaml", {"forget": [], "forget_samples": 0.1}),
}
KEYS = ("mia_auc", "mia_auc_retain", "loss_forget", "loss_retain", "loss_test")


def done_rows() -> list[dict]:
    from bench_digits_classes import done_rows as read  # this folder is on sys.path when run as a script

    return read(ROWS)


def recipe(method: str) -> dict:
    from bench_digits_classes import recipe_values  # this folder is on sys.path when run as a script

    return recipe_values(*RECIPES[method])


def run(methods: list[str], seed: int) -> None:
    import erasekit

    have = {(r["method"], r["forget_samples_seed"]) for r in done_rows()}
    for method in methods:
        if (method, seed) in have:
            continue
        work = Path(tempfile.mkdtemp(prefix="erasekit-samples-"))
        try:
            started = time.time()
            result = erasekit.erase(recipe(method), forget_samples_seed=seed, output_dir=str(work / "out"),
                                    overwrite=True)
            seconds = time.time() - started
        finally:
            shutil.rmtree(work, ignore_errors=True)
        row = {"method": method, "forget_samples_seed": seed, "before": result.metrics["before"],
               "after": result.metrics["after"], "seconds_with_eval": round(seconds, 1),
               "date": time.strftime("%Y-%m-%d"), "machine": platform.node() or "vm"}
        print(json.dumps(row), flush=True)
        from bench_digits_classes import append_row

        append_row(row, ROWS)


def report() -> str:
    rows = done_rows()
    retrain = {r["forget_samples_seed"]: r["after"] for r in rows if r["method"] == "retrain"}
    lines = ["| method | seed | MIA AUC forget vs test | |AUC - retrain's| | MIA AUC retain vs test | loss forget "
             "| loss retain | loss test | s (erase + membership test) |", "|---|---|---|---|---|---|---|---|---|"]
    if rows:
        b = rows[0]["before"]
        lines.append(f"| base (not unlearned) | {rows[0]['forget_samples_seed']} | {b['mia_auc']:.3f} | "
                     + (f"{abs(b['mia_auc'] - retrain[rows[0]['forget_samples_seed']]['mia_auc']):.3f}"
                        if rows[0]["forget_samples_seed"] in retrain else "n/a")
                     + f" | {b['mia_auc_retain']:.3f} | {b['loss_forget']:.4f} | {b['loss_retain']:.4f} | "
                     f"{b['loss_test']:.4f} | |")
    for r in rows:
        a, ref = r["after"], retrain.get(r["forget_samples_seed"])
        gap = f"{abs(a['mia_auc'] - ref['mia_auc']):.3f}" if ref else "n/a"
        lines.append(f"| {r['method']} | {r['forget_samples_seed']} | {a['mia_auc']:.3f} | {gap} | "
                     f"{a['mia_auc_retain']:.3f} | {a['loss_forget']:.4f} | {a['loss_retain']:.4f} | "
                     f"{a['loss_test']:.4f} | {r['seconds_with_eval']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="retrain,salun,rl,ga,salun-rum")
    parser.add_argument("--seed", type=int, default=0, help="forget_samples_seed")
    parser.add_argument("--report", action="store_true", help="print the Markdown table")
    args = parser.parse_args()
    if args.report:
        table = report()
        print(table)
        (Path(__file__).parent / "samples.md").write_text(f"""# Quality: sample unlearning on the digits model

Written by `python benchmarks/quality/bench_digits_samples.py --report` from
`benchmarks/results/quality-digits-samples.jsonl` (2-core CPU, rows run one at a time). Rows were produced by

```bash
python benchmarks/quality/bench_digits_samples.py --methods retrain,salun,rl,ga,salun-rum-cfg_gain --seed 0
python benchmarks/quality/bench_digits_samples.py --methods salun-rum --seed 0
```

Every method forgets the same 144 of the 1,437 training digits (`forget_samples: 0.1`, seed 0; recipes in
`RECIPES`: configs/digits-samples.yaml, rl and ga on it, salun-rum with `refine_steps: [0, 150, 150]` and the
default proxy `loss`, salun-rum-cfg_gain the same split by the CFG gain (the default before the ground-truth
benchmark showed it ranks memorization inversely, benchmarks/quality/memorization.md),
retrain = configs/digits-retrain.yaml on the same images). The membership test scores each image by its
mean denoising loss under its own label (16 noise draws): AUC forget vs the 360 held-out test images is
the attack's success (retrain's is the target), AUC retain vs test is the model's own generalisation gap.

{table}
""")
        return
    run(args.methods.split(","), args.seed)


if __name__ == "__main__":
    main()
