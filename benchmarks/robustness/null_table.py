"""Issue 26's table: does an erasure reach the unconditional path, judged against exact unlearning?

For each digit and seed it builds (skipping what exists) the model retrained without the digit
(`configs/digits-retrain.yaml`, one per digit), the shipped SalUn erase (`configs/digits.yaml`) and the
robust one (`configs/digits-robust.yaml`), then probes every model at that seed with the trajectory probe
(held-out real images of the digit noised to 0.5 T or 0.7 T and denoised under the digit's label or the
null label, 25 instances x 4 images) and the label inversion `cce` (8 x 4), and reports image-level rates,
their excess over the retrained model, and the erase's own UA, RA, retain FD and noisy share.

    python benchmarks/robustness/null_table.py --work outputs/null [--digits 3 5 8] [--seeds 0 1] [--lanes 2]
    python benchmarks/robustness/null_table.py --work outputs/null --table    # results/null-probe-digits.json

The robust recipe trains against none of these probes: its objective is the anchor target on the null
branch, and no attack runs in its loop.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lanes import ROOT, run_in_lanes

RECIPES = {"retrain": "configs/digits-retrain.yaml", "salun": "configs/digits.yaml",
           "robust": "configs/digits-robust.yaml"}
PROBES = {"label 0.5T": ["trajectory", "--trajectory-branch", "label", "--trajectory-level", "0.5"],
          "null 0.5T": ["trajectory", "--trajectory-branch", "null", "--trajectory-level", "0.5"],
          "null 0.7T": ["trajectory", "--trajectory-branch", "null", "--trajectory-level", "0.7"],
          "cce": ["cce"]}
INSTANCES = {"trajectory": 25, "cce": 8}
RESULTS = ROOT / "benchmarks" / "results" / "null-probe-digits.json"


def model_dir(work: Path, method: str, digit: int, seed: int) -> Path:
    return work / (f"retrain-{digit}" if method == "retrain" else f"{method}-{digit}-s{seed}")


def runs(digits, seeds) -> list[tuple[str, int, int]]:
    """(method, digit, seed) of every probed model: the reference and the robust erase at every seed, the
    plain SalUn erase (for comparison) at the first."""
    return [(m, d, s) for d in digits for s in seeds for m in RECIPES if m != "salun" or s == seeds[0]]


def erase_jobs(work: Path, digits, seeds) -> list[tuple[Path, list[str]]]:
    jobs = {}
    for method, digit, seed in runs(digits, seeds):
        out = model_dir(work, method, digit, seed)
        seeded = [] if method == "retrain" else ["--seed", str(seed)]  # one reference, retrained at its seed
        jobs[out] = ["erase", "--config", RECIPES[method], "--forget", str(digit), *seeded, "--output-dir", str(out)]
    return list(jobs.items())


def probe_dir(work: Path, method: str, digit: int, seed: int, probe: str) -> Path:
    return work / "probes" / f"{method}-{digit}-{probe.replace(' ', '-')}-s{seed}"


def probe_jobs(work: Path, digits, seeds) -> list[tuple[Path, list[str]]]:
    jobs = []
    for method, digit, seed in runs(digits, seeds):
        for probe, flags in PROBES.items():
            out = probe_dir(work, method, digit, seed, probe)
            jobs.append((out, ["attack", "--model", str(model_dir(work, method, digit, seed)), "--attack", *flags,
                               "--forget", str(digit), "--seed", str(seed), "--attack-base", "false",
                               "--instances", str(INSTANCES[flags[0]]), "--output", str(out)]))
    return jobs


def erase_metrics(model: Path) -> dict:
    metrics = json.loads((model / "erasure.json").read_text())["metrics"]
    before, after = metrics["before"], metrics["after"]
    return {"UA": after["UA"], "RA": after["RA"], "FD": after["FD"], "noisy": after["noisy_rate_retain"],
            "base_FD": before["FD"], "base_noisy": before["noisy_rate_retain"]}


def table(work: Path, digits, seeds) -> dict:
    def rate(method, digit, seed, probe):
        report = json.loads((probe_dir(work, method, digit, seed, probe) / "report.json").read_text())
        return next(r for r in report["attacks"] if r["role"] == "erased")["image_rate"]

    rows = []
    for method, digit, seed in runs(digits, seeds):
        if not (probe_dir(work, method, digit, seed, "cce") / "report.json").is_file():
            continue  # not probed yet
        row = {"digit": digit, "seed": seed, "method": method}
        for probe in PROBES:
            row[probe] = rate(method, digit, seed, probe)
            row[f"excess {probe}"] = row[probe] - rate("retrain", digit, seed, probe)
        rows.append({**row, **erase_metrics(model_dir(work, method, digit, seed))})
    return {"probes": {p: " ".join(f) for p, f in PROBES.items()}, "instances": INSTANCES, "rows": rows}


def print_table(record: dict) -> None:
    print("| digit | seed | method | " + " | ".join(record["probes"]) + " | UA | RA | FD (base) | noisy (base) |")
    print("|---" * (7 + len(record["probes"])) + "|")
    for r in record["rows"]:
        cells = [f"{r[p]:.2f} ({r['excess ' + p]:+.2f})" for p in record["probes"]]
        print(f"| {r['digit']} | {r['seed']} | {r['method']} | " + " | ".join(cells)
              + f" | {r['UA']:.2f} | {r['RA']:.2f} | {r['FD']:.1f} ({r['base_FD']:.1f}) | {r['noisy']:.3f} "
                f"({r['base_noisy']:.3f}) |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="outputs/null")
    parser.add_argument("--digits", type=int, nargs="+", default=[3, 5, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--table", action="store_true", help="only write the table of what is built and probed")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    (work / "logs").mkdir(parents=True, exist_ok=True)
    if not args.table:
        def todo():
            return [(o.name, a) for o, a in erase_jobs(work, args.digits, args.seeds) + probe_jobs(work, args.digits,
                                                                                                   args.seeds)
                    if not o.exists()]

        def ready(cmd):  # a probe waits for its model
            return cmd[0] != "attack" or (Path(cmd[cmd.index("--model") + 1]) / "erasure.json").is_file()

        run_in_lanes(todo, work / "logs", args.lanes, ready)
    record = table(work, args.digits, args.seeds)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print_table(record)


if __name__ == "__main__":
    main()
