"""One-shot erasure from trained mnemonic codes, against images and data-free codes, on one model.

The model is the digits UNet trained with mnemonic codes mixed into its batches (`erasekit.erase.mnemonic`):

    erasekit train-base digits --t-mix 0.1 --output-dir outputs/mnemonic

For that model (`--model`), every class is erased by `configs/digits-oneshot.yaml` as shipped with
`inputs: mnemonic` (the codes it was trained with, under its flag), `inputs: data` (64 forget and 64 retain
digits) and `inputs: codes` (seeded codes it never saw), then judged exactly as `bench_digits_classes.py`
judges (50 samples per class, UA, RA, retain FD, noisy share). A base row records the model before
erasure beside the bundled `digits-cfg`, so that what training with codes costs the model is on record
too (e.g. whether it ever samples them: the noisy share). Rows go to
`results/quality-digits-mnemonic.jsonl` and are skipped when present; `--report` writes mnemonic.md.

    python benchmarks/quality/bench_digits_mnemonic.py --model outputs/mnemonic/digits-cfg-mnemonic
    python benchmarks/quality/bench_digits_mnemonic.py --report
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from bench_digits_classes import (
    RESULTS,
    append_row,
    done_rows,
    erase_and_measure,
    metrics_for,
    parse_range,
    recipe,
    samples,
)

ROWS = RESULTS / "quality-digits-mnemonic.jsonl"
INPUTS = ("mnemonic", "data", "codes")
BASES = {"trained with codes": None, "bundled digits-cfg": "bundled:digits-cfg"}  # None: --model


def run(model: str, inputs: list[str], classes: list[int], n: int = 50, eval_seed: int = 1234) -> None:
    from erasekit.eval.measure import Judge
    from erasekit.eval.suite import EvalSuite

    if not (Path(model) / "mnemonic.safetensors").is_file():
        raise SystemExit(f"{model} has no mnemonic.safetensors; train it with "
                         "`erasekit train-base digits --t-mix 0.1 --output-dir outputs/mnemonic`")
    judge, real = Judge(EvalSuite(metrics=["classifier"])), {}
    rows = done_rows(ROWS)
    have = {(r["inputs"], r["class"]) for r in rows}
    for name, path in BASES.items():
        if any(r["inputs"] == "base" and r["base"] == name for r in rows):
            continue
        drawn = samples(path or model, judge, n, eval_seed)
        append_row({"inputs": "base", "base": name, "class": -1, "model": path or model,
                    "per_class": {str(c): metrics_for(drawn, c, judge, real) for c in range(drawn["classes"])}}, ROWS)
    for kind in inputs:
        for c in classes:
            if (kind, c) in have:
                continue
            values = {**recipe("oneshot", c, 0, ""), "inputs": kind, "pretrained_model_name_or_path": model}
            metrics, seconds = erase_and_measure(values, c, judge, real, n, eval_seed)
            row = {"inputs": kind, "class": c, "seed": 0, **metrics, "erase_seconds": round(seconds, 1),
                   "model": model, "samples_per_class": n, "eval_seed": eval_seed, "date": time.strftime("%Y-%m-%d")}
            print(json.dumps(row), flush=True)
            append_row(row, ROWS)


def report() -> str:
    rows = done_rows(ROWS)
    bases = {r["base"]: r["per_class"] for r in rows if r["inputs"] == "base"}
    base = bases.get("trained with codes")
    lines = ["| inputs | classes | UA mean (min) | RA drop mean (max), points | FD / base FD mean (max) "
             "| noisy retain share mean (max) | erase s mean (max) |", "|---|---|---|---|---|---|---|"]
    for kind in INPUTS:
        mine = sorted((r for r in rows if r["inputs"] == kind), key=lambda r: r["class"])
        if not mine or base is None:
            continue
        ua = [r["UA"] for r in mine]
        drops = [100 * (base[str(r["class"])]["RA"] - r["RA"]) for r in mine]
        ratios = [r["FD"] / base[str(r["class"])]["FD"] for r in mine]
        noisy = [r["noisy_rate_retain"] for r in mine]
        secs = [r["erase_seconds"] for r in mine]
        lines.append(f"| {kind} | {len(mine)} | {np.mean(ua):.3f} ({min(ua):.2f}) | {np.mean(drops):.2f} "
                     f"({max(drops):.2f}) | {np.mean(ratios):.2f} ({max(ratios):.2f}) | {np.mean(noisy):.3f} "
                     f"({max(noisy):.3f}) | {np.mean(secs):.1f} ({max(secs):.1f}) |")
    lines += ["", "| base model | RA mean | retain FD mean | noisy share mean (max) |", "|---|---|---|---|"]
    for name, per_class in bases.items():
        values = list(per_class.values())
        noisy = [v["noisy_rate_retain"] for v in values]
        lines.append(f"| {name} | {np.mean([v['RA'] for v in values]):.3f} | "
                     f"{np.mean([v['FD'] for v in values]):.1f} | {np.mean(noisy):.3f} ({max(noisy):.3f}) |")
    lines += ["", "| class | " + " | ".join(f"{k}: UA / FD" for k in INPUTS) + " |", "|---|---|---|---|"]
    for c in sorted({r["class"] for r in rows if r["inputs"] in INPUTS}):
        cells = []
        for kind in INPUTS:
            r = next((r for r in rows if r["inputs"] == kind and r["class"] == c), None)
            cells.append(f"{r['UA']:.2f} / {r['FD']:.1f}" if r else "")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    variants = [r for r in done_rows(RESULTS / "digits-recipe-sweep.jsonl") if r["variant"].startswith("mn-")]
    if variants:  # bench_digits_recipe_sweep.py rows on this model (variant names mn-*)
        lines += ["", "Variants of `inputs: mnemonic` (bench_digits_recipe_sweep.py --recipe oneshot, the overrides "
                  "as recorded there):", "", "| variant | class | UA | retain FD / base FD | noisy retain share |",
                  "|---|---|---|---|---|"]
        for r in sorted(variants, key=lambda r: (r["variant"], r["class"])):
            over = {k: v for k, v in r["over"].items() if k not in ("inputs", "pretrained_model_name_or_path")}
            lines.append(f"| {r['variant']} {json.dumps(over)} | {r['class']} | {r['UA']:.2f} | "
                         f"{r['FD'] / base[str(r['class'])]['FD']:.2f} | {r['noisy_rate_retain']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="a digits model trained with `erasekit train-base digits --t-mix`")
    parser.add_argument("--inputs", default=",".join(INPUTS))
    parser.add_argument("--classes", default="0-9")
    parser.add_argument("--report", action="store_true", help="write mnemonic.md from the recorded rows")
    args = parser.parse_args()
    if args.report:
        table = report()
        print(table)
        (Path(__file__).parent / "mnemonic.md").write_text(
            "# Quality: one-shot erasure from trained mnemonic codes\n\nWritten by `python benchmarks/quality/"
            "bench_digits_mnemonic.py --report` from `benchmarks/results/quality-digits-mnemonic.jsonl` (2-core "
            f"CPU); see the script's docstring for the commands and the protocol.\n\n{table}\n")
        return
    if not args.model:
        parser.error("--model is required unless --report is given")
    bad = [k for k in args.inputs.split(",") if k not in INPUTS]
    if bad:
        parser.error(f"--inputs: unknown {', '.join(bad)}; choose from {', '.join(INPUTS)}")
    run(args.model, args.inputs.split(","), parse_range(args.classes))


if __name__ == "__main__":
    main()
