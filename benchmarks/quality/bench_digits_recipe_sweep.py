"""Variants of the digits SalUn recipe on a few classes: which settings hold the kept classes.

Each variant is a recipe of `bench_digits_classes.RECIPES` (`--recipe`; default salun, which is
`configs/digits.yaml`) with overrides (given as JSON); every (variant, class, seed) row
erases the class with evaluation off, then judges 50 samples per class exactly as
`bench_digits_classes.py` does (UA, RA, retain FD). Rows are appended to
`results/digits-recipe-sweep.jsonl` as they finish, and finished rows are skipped. The rows recorded
there (2026-11-30, seed 0, classes 9, 0 and 8) chose `retain_target: teacher` and `alpha: 10`:

    python benchmarks/quality/bench_digits_recipe_sweep.py --classes 9,0 --variants '{"steps600": {"max_steps": 600},
        "alpha5": {"alpha": 5.0}, "ratio02": {"ratio": 0.2}, "ema995": {"ema_decay": 0.995},
        "lr5e-5": {"learning_rate": 5e-5}, "cosine": {"lr_scheduler": "cosine"},
        "teacher": {"retain_target": "teacher"}, "teacher-warm100": {"retain_target": "teacher", "lr_warmup_steps": 100},
        "teacher-600": {"retain_target": "teacher", "max_steps": 600}}'
    python benchmarks/quality/bench_digits_recipe_sweep.py --classes 9,0,8 --variants '{
        "teacher-a10": {"retain_target": "teacher", "alpha": 10.0}, "teacher-a5": {"retain_target": "teacher", "alpha": 5.0},
        "teacher-a20": {"retain_target": "teacher", "alpha": 20.0}}'

The one-shot rows (2026-11-30, seed 0, classes 0, 9 and 8) chose `scope: no-time` with several factors
for configs/digits-oneshot.yaml, whose scope was `all` and factors `[0.0]` then; the mn-* rows try
`inputs: mnemonic` on a model trained with codes (bench_digits_mnemonic.py):

    python benchmarks/quality/bench_digits_recipe_sweep.py --recipe oneshot --classes 0,9,8 --variants '{
        "os-notime": {"scope": "^(?!.*time_emb)"}, "os-multi": {"factors": [0.0, -0.25, -0.5, -1.0]},
        "os-notime-multi": {"scope": "^(?!.*time_emb)", "factors": [0.0, -0.25, -0.5, -1.0]}}'
    python benchmarks/quality/bench_digits_recipe_sweep.py --recipe oneshot --classes 0,2,7 --variants '{
        "mn-r005": {"inputs": "mnemonic", "ratio": 0.005, "pretrained_model_name_or_path": "MODEL"},
        "mn-zero": {"inputs": "mnemonic", "factors": [0.0], "pretrained_model_name_or_path": "MODEL"}}'

The overrides apply to the recipe of the day: the rows above were taken when `configs/digits.yaml` had
`retain_target: noise` (the default) and `alpha: 2`, so to repeat them now add those two keys to every
variant that does not set them. Some rows shared the two cores with other jobs ("erase s" inflated).
"""

from __future__ import annotations

import argparse
import json
import time

from bench_digits_classes import (
    RECIPES,
    RESULTS,
    append_row,
    done_rows,
    erase_and_measure,
    parse_range,
    recipe,
)

ROWS = RESULTS / "digits-recipe-sweep.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", required=True, help="JSON object: variant name -> overrides of the recipe")
    parser.add_argument("--classes", default="9,0")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--recipe", default="salun", choices=sorted(RECIPES),
                        help="the bench_digits_classes recipe the variants override")
    args = parser.parse_args()
    try:
        variants = json.loads(args.variants)
    except json.JSONDecodeError as e:
        parser.error(f"--variants is not valid JSON ({e}); give an object such as '{{\"a10\": {{\"alpha\": 10}}}}'")
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        parser.error("--variants must be a JSON object mapping each variant name to an object of overrides")
    from erasekit.eval.measure import Judge
    from erasekit.eval.suite import EvalSuite

    judge, real = Judge(EvalSuite(metrics=["classifier"])), {}
    have = {(r["variant"], r["class"], r["seed"]) for r in done_rows(ROWS)}
    for name, overrides in variants.items():
        for seed in parse_range(args.seeds):
            for c in parse_range(args.classes):
                if (name, c, seed) in have:
                    continue
                metrics, seconds = erase_and_measure({**recipe(args.recipe, c, seed, ""), **overrides}, c, judge, real)
                row = {"variant": name, "recipe": args.recipe, "over": overrides, "class": c, "seed": seed, **metrics,
                       "erase_seconds": round(seconds, 1), "date": time.strftime("%Y-%m-%d")}
                print(json.dumps(row), flush=True)
                append_row(row, ROWS)


if __name__ == "__main__":
    main()
