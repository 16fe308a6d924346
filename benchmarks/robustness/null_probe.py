"""Does the erasure reach the unconditional path? The text-free probe on digits-cfg models, beside the
retrained reference: held-out real images of the erased digit noised to 0.5 T or 0.7 T and denoised
under the erased label or the null label (`trajectory`), and the label inversion `cce`.

    python benchmarks/robustness/null_probe.py --digit 3 --seed 0 --out DIR \\
        --model retrain=outputs/digits-retrain-3 --model salun=outputs/digits-salun-3 [--model NAME=DIR ...]

Writes DIR/probe-<digit>-s<seed>.json: per model and probe the image-level rate (the share of evaluation
images the digits judge reads as the digit) and the instance ASR, and the excess of each over the model
named `retrain`; prints the table. `--reference-record FILE` takes the `retrain` figures from an earlier
record of the same digit and seed instead of probing a retrained model again (about 11 minutes to train);
the record names that file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from erasekit.attacks import AttackRun, CCEConfig, TrajectoryConfig, attack

PROBES = {"label 0.5T": ("trajectory", TrajectoryConfig(branch="label", level=0.5)),
          "null 0.5T": ("trajectory", TrajectoryConfig(branch="null", level=0.5)),
          "null 0.7T": ("trajectory", TrajectoryConfig(branch="null", level=0.7)),
          "cce": ("cce", CCEConfig())}
INSTANCES = {"trajectory": 25, "cce": 8}  # x 4 evaluation images


def probe(label: str, model: str, digit: int, seed: int, out: Path) -> dict:
    figures = {}
    for name, (kind, config) in PROBES.items():
        folder = out / f"{label}-{digit}-{name.replace(' ', '-')}-s{seed}"
        done = folder / "report.json"
        if done.is_file():
            report = json.loads(done.read_text())
        else:
            report = attack(AttackRun(model=model, attack=[kind], attack_base=False, forget=[digit], seed=seed,
                                      instances=INSTANCES[kind], output=str(folder)), {kind: config})
        row = next(r for r in report["attacks"] if r["role"] == "erased")
        figures[name] = {"image_rate": row["image_rate"], "asr": row["asr"], "n": row["n"],
                         "wall_s_per_instance": row["wall_s_per_instance"]}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--digit", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", action="append", required=True, help="NAME=DIR (one named retrain)")
    parser.add_argument("--reference-record", help="an earlier probe-<digit>-s<seed>.json whose retrain figures "
                                                   "serve as the reference")
    args = parser.parse_args()
    if args.reference_record and not Path(args.reference_record).is_file():  # before any probe runs
        parser.error(f"--reference-record {args.reference_record}: no such file; give the probe-<digit>-s<seed>.json "
                     f"that an earlier run with --model retrain=DIR wrote")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = dict(m.split("=", 1) for m in args.model)
    results = {name: probe(name, path, args.digit, args.seed, out) for name, path in models.items()}
    if args.reference_record:
        earlier = json.loads(Path(args.reference_record).read_text())
        if (earlier["digit"], earlier["seed"]) != (args.digit, args.seed) or "retrain" not in earlier["results"]:
            parser.error(f"--reference-record {args.reference_record}: no retrain figures for digit {args.digit}, "
                         f"seed {args.seed} in it")
        results["retrain"] = earlier["results"]["retrain"]
        models["retrain"] = f"{earlier['models']['retrain']} (figures from {args.reference_record})"
    ref = results.get("retrain")
    for figures in results.values():
        for probe_name, f in figures.items():
            if ref is not None:
                f["excess_image_rate"] = f["image_rate"] - ref[probe_name]["image_rate"]
                f["excess_asr"] = f["asr"] - ref[probe_name]["asr"]
    record = {"digit": args.digit, "seed": args.seed, "models": models, "results": results}
    (out / f"probe-{args.digit}-s{args.seed}.json").write_text(json.dumps(record, indent=2) + "\n")
    print("| model | " + " | ".join(PROBES) + " |\n|---|" + "---|" * len(PROBES))
    for name, figures in results.items():
        cells = [f"{f['image_rate']:.2f} ({f.get('excess_image_rate', 0):+.2f})" for f in figures.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
