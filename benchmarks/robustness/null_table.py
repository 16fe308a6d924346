"""Issue 26's table: does an erasure reach the unconditional path, judged against exact unlearning?

For each digit and seed it builds (skipping what exists) the model retrained without the digit
(`configs/digits-retrain.yaml`, one per digit), the shipped SalUn erase (`configs/digits.yaml`) and the
robust one (`configs/digits-robust.yaml`), then probes every model at that seed with the trajectory probe
(held-out real images of the digit noised to 0.5 T or 0.7 T and denoised under the digit's label or the
null label, 25 instances x 4 images) and the label inversion `cce` (8 x 4), and reports image-level rates,
their excess over the retrained model, and the erase's own UA, RA, retain FD and noisy share.

    python benchmarks/robustness/null_table.py --work outputs/null [--digits 3 5 8] [--seeds 0 1] [--lanes 2]
    python benchmarks/robustness/null_table.py --work outputs/null --table    # results/null-probe-digits.json
    python benchmarks/robustness/null_table.py --work outputs/null-t2i --words seven eight --seeds 0
    python benchmarks/robustness/null_table.py --work outputs/null2 --methods robust   # after a recipe change

With `--words`, the same on `bundled:digits-t2i`: one reference trained without all the words
(`erasekit train-base digits-t2i --exclude ...`), `configs/digits-t2i.yaml` and
`configs/digits-t2i-robust.yaml` rewritten for each word, the prompt "a handwritten digit WORD", the null
branch the empty prompt, and `soft` (a free prefix) beside `cce`, both at 32 instances x 4 images
(results/null-probe-digits-t2i.json).

The digits robust recipe trains against none of these probes: its objective is the anchor target on the
null branch, and no attack runs in its loop. The digits-t2i one runs three `soft` rounds in its loop, so
there `cce` and the trajectory probes are the attacks it did not train against.

`--methods` builds and probes only those methods; the other rows, and the reference figures the excess is
taken over, are read from the results file as it stands (the references take about 24 minutes each).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lanes import ROOT, run_in_lanes
from models import word_recipe

from erasekit.io import write_json
from erasekit.pipelines.digits import NUMBER_WORDS

RECIPES = {"retrain": "configs/digits-retrain.yaml", "salun": "configs/digits.yaml",
           "robust": "configs/digits-robust.yaml"}
T2I_RECIPES = {"salun": "configs/digits-t2i.yaml", "robust": "configs/digits-t2i-robust.yaml"}
PROBES = {"label 0.5T": ["trajectory", "--trajectory-branch", "label", "--trajectory-level", "0.5"],
          "null 0.5T": ["trajectory", "--trajectory-branch", "null", "--trajectory-level", "0.5"],
          "null 0.7T": ["trajectory", "--trajectory-branch", "null", "--trajectory-level", "0.7"],
          "cce": ["cce"]}
T2I_PROBES = {**PROBES, "soft": ["soft"]}
INSTANCES = {"trajectory": 25, "cce": 8}
# text models: cce and soft at 32 instances (128 images; 8 gave a 95% interval on the image rate of about
# +-0.2, too wide for a +0.05 target); the digits references are not rebuilt for it (24 minutes each)
T2I_INSTANCES = {"trajectory": 25, "cce": 32, "soft": 32}
RESULTS = ROOT / "benchmarks" / "results" / "null-probe-digits.json"
T2I_RESULTS = ROOT / "benchmarks" / "results" / "null-probe-digits-t2i.json"


def is_word(concept) -> bool:
    return isinstance(concept, str)


def probes_of(concept) -> dict[str, list[str]]:
    return T2I_PROBES if is_word(concept) else PROBES


def instances_of(concept) -> dict[str, int]:
    return T2I_INSTANCES if is_word(concept) else INSTANCES


def model_dir(work: Path, method: str, concept, seed: int, words=()) -> Path:
    if method == "retrain" and is_word(concept):
        return work / "refs" / ("digits-t2i-without-" + "-".join(sorted(words, key=NUMBER_WORDS.index)))
    return work / (f"retrain-{concept}" if method == "retrain" else f"{method}-{concept}-s{seed}")


def runs(digits, seeds, methods=tuple(RECIPES)) -> list[tuple[str, int, int]]:
    """(method, digit, seed) of every probed model of `methods`: the reference and the robust erase at every
    seed, the plain SalUn erase (for comparison) at the first."""
    return [(m, d, s) for d in digits for s in seeds for m in RECIPES
            if m in methods and (m != "salun" or s == seeds[0])]


def word_suite(work: Path, word: str) -> Path:
    """configs/eval/digits-t2i.yaml for `word`: its rows of `word` are the target, every other row (the
    seven paraphrases too, for another word) is retained."""
    label = str(NUMBER_WORDS.index(word))
    rows = (ROOT / "configs" / "eval" / "digits-t2i.csv").read_text().splitlines()
    out = [rows[0]]
    for row in rows[1:]:
        *fields, group = row.split(",")
        if word != "seven":
            group = "target" if fields[3] == label else "retain"
        out.append(",".join([*fields, group]))
    folder = work / "suites"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"digits-t2i-{word}.csv").write_text("\n".join(out) + "\n")
    suite = (ROOT / "configs" / "eval" / "digits-t2i.yaml").read_text()
    path = folder / f"digits-t2i-{word}.yaml"
    path.write_text(suite.replace("prompts_csv: digits-t2i.csv", f"prompts_csv: digits-t2i-{word}.csv"))
    return path


def eval_dir(work: Path, method: str, concept, seed: int) -> Path:
    return work / "evals" / f"{method}-{concept}-s{seed}"


def eval_jobs(work: Path, concepts, seeds, methods=tuple(RECIPES)) -> list[tuple[Path, list[str]]]:
    """Text models: the digits judge on the word's suite (UA, RA, collateral), erased beside the base."""
    return [(eval_dir(work, m, c, s), ["eval", "--model", str(model_dir(work, m, c, s)), "--baseline",
                                       "bundled:digits-t2i", "--suite", str(word_suite(work, c)),
                                       "--output", str(eval_dir(work, m, c, s))])
            for m, c, s in runs(concepts, seeds, methods) if is_word(c) and m != "retrain"]


def erase_jobs(work: Path, concepts, seeds, methods=tuple(RECIPES)) -> list[tuple[Path, list[str]]]:
    jobs = {}
    words = [c for c in concepts if is_word(c)]
    for method, concept, seed in runs(concepts, seeds, methods):
        out = model_dir(work, method, concept, seed, words)
        if method == "retrain" and is_word(concept):  # one reference without every word
            jobs[out] = ["train-base", "digits-t2i", *[a for w in words for a in ("--exclude", w)],
                         "--output-dir", str(out.parent)]
            continue
        seeded = [] if method == "retrain" else ["--seed", str(seed)]  # one reference, retrained at its seed
        recipe = str(word_recipe(work, T2I_RECIPES[method], concept)) if is_word(concept) else RECIPES[method]
        target = [] if is_word(concept) else ["--forget", str(concept)]
        jobs[out] = ["erase", "--config", recipe, *target, *seeded, "--output-dir", str(out)]
    return list(jobs.items())


def probe_dir(work: Path, method: str, concept, seed: int, probe: str) -> Path:
    return work / "probes" / f"{method}-{concept}-{probe.replace(' ', '-')}-s{seed}"


def probe_jobs(work: Path, concepts, seeds, methods=tuple(RECIPES)) -> list[tuple[Path, list[str]]]:
    jobs = []
    words = [c for c in concepts if is_word(c)]
    for method, concept, seed in runs(concepts, seeds, methods):
        target = ["--forget-prompts", f"a handwritten digit {concept}"] if is_word(concept) else \
            ["--forget", str(concept)]
        for probe, flags in probes_of(concept).items():
            out = probe_dir(work, method, concept, seed, probe)
            jobs.append((out, ["attack", "--model", str(model_dir(work, method, concept, seed, words)), "--attack",
                               *flags, *target, "--seed", str(seed), "--attack-base", "false",
                               "--instances", str(instances_of(concept)[flags[0]]), "--output", str(out)]))
    return jobs


def erase_metrics(model: Path) -> dict:
    metrics = json.loads((model / "erasure.json").read_text())["metrics"]
    before, after = metrics["before"], metrics["after"]
    return {"UA": after["UA"], "RA": after["RA"], "FD": after["FD"], "noisy": after["noisy_rate_retain"],
            "base_FD": before["FD"], "base_noisy": before["noisy_rate_retain"]}


def eval_metrics(folder: Path) -> dict:
    """A text model's judge figures: UA, RA (the base's beside it) and the retain images' FD to the base's."""
    m = json.loads((folder / "report.json").read_text())["metrics"]
    return {"UA": 1 - m["target"]["model"]["classifier_accuracy"], "RA": m["retain"]["model"]["classifier_accuracy"],
            "base_RA": m["retain"]["base"]["classifier_accuracy"], "collateral_FD": m["collateral"].get("fd"),
            "pixel_MAE": m["collateral"]["paired_pixel_mae"]}


def table(work: Path, concepts, seeds, methods=tuple(RECIPES), earlier: Path | None = None) -> dict:
    """The rows of `methods` from `work`; those of the other methods, and the reference figures when the
    reference is not among `methods`, from the record `earlier`."""
    words = [c for c in concepts if is_word(c)]
    recorded = {}
    if set(RECIPES) - set(methods):
        if earlier is None or not earlier.is_file():
            raise SystemExit(f"--methods {' '.join(methods)}: the other rows are read from {earlier}, which does "
                             f"not exist; build every method once (no --methods) first")
        recorded = {(r["concept"], r["seed"], r["method"]): r for r in json.loads(earlier.read_text())["rows"]}

    def rate(method, concept, seed, probe):
        if method not in methods:
            key = (concept, seed, method)
            if key not in recorded:
                raise SystemExit(f"{earlier} has no {method} row for {concept} at seed {seed}; run the driver "
                                 f"without --methods")
            return recorded[key][probe]
        report = json.loads((probe_dir(work, method, concept, seed, probe) / "report.json").read_text())
        return next(r for r in report["attacks"] if r["role"] == "erased")["image_rate"]

    rows = []
    for method, concept, seed in runs(concepts, seeds):
        if method not in methods:
            if (concept, seed, method) in recorded:
                rows.append(recorded[(concept, seed, method)])
            continue
        if not all((probe_dir(work, method, concept, seed, p) / "report.json").is_file() for p in probes_of(concept)):
            continue  # not probed yet
        row = {"concept": concept, "seed": seed, "method": method}
        for probe in probes_of(concept):
            row[probe] = rate(method, concept, seed, probe)
            row[f"excess {probe}"] = row[probe] - rate("retrain", concept, seed, probe)
        if is_word(concept):
            judged = eval_dir(work, method, concept, seed)
            rows.append({**row, **(eval_metrics(judged) if (judged / "report.json").is_file() else {})})
        else:
            rows.append({**row, **erase_metrics(model_dir(work, method, concept, seed))})
    probes, instances = (T2I_PROBES, T2I_INSTANCES) if words else (PROBES, INSTANCES)
    return {"probes": {p: " ".join(f) for p, f in probes.items()}, "instances": instances, "rows": rows}


def print_table(record: dict) -> None:
    def number(value, form):
        return "-" if value is None else format(value, form)

    text = any(isinstance(r["concept"], str) for r in record["rows"])
    tail = "UA | RA (base) | retain FD to the base's | pixel MAE" if text else "UA | RA | FD (base) | noisy (base)"
    print("| concept | seed | method | " + " | ".join(record["probes"]) + f" | {tail} |")
    print("|---" * (7 + len(record["probes"])) + "|")
    for r in record["rows"]:
        cells = [f"{r[p]:.2f} ({r['excess ' + p]:+.2f})" for p in record["probes"]]
        if text:
            cells += [number(r.get("UA"), ".2f"), f"{number(r.get('RA'), '.2f')} ({number(r.get('base_RA'), '.2f')})",
                      number(r.get("collateral_FD"), ".2f"), number(r.get("pixel_MAE"), ".3f")]
        else:
            cells += [number(r.get("UA"), ".2f"), number(r.get("RA"), ".2f"),
                      f"{number(r.get('FD'), '.1f')} ({number(r.get('base_FD'), '.1f')})",
                      f"{number(r.get('noisy'), '.3f')} ({number(r.get('base_noisy'), '.3f')})"]
        print(f"| {r['concept']} | {r['seed']} | {r['method']} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="outputs/null")
    parser.add_argument("--digits", type=int, nargs="+", default=[3, 5, 8])
    parser.add_argument("--words", nargs="+", choices=NUMBER_WORDS, help="digits-t2i words instead of digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--table", action="store_true", help="only write the table of what is built and probed")
    parser.add_argument("--methods", nargs="+", choices=list(RECIPES), default=list(RECIPES),
                        help="build and probe only these; the other rows come from the results file")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    concepts = args.words or args.digits
    results = T2I_RESULTS if args.words else RESULTS
    if set(RECIPES) - set(args.methods) and not results.is_file():
        parser.error(f"--methods: the other rows are read from {results}, which does not exist; run without "
                     f"--methods first")
    (work / "logs").mkdir(parents=True, exist_ok=True)
    if not args.table:
        def todo():
            jobs = erase_jobs(work, concepts, args.seeds, args.methods) \
                + probe_jobs(work, concepts, args.seeds, args.methods) + eval_jobs(work, concepts, args.seeds, args.methods)
            return [(f"{o.parent.name}-{o.name}", a) for o, a in jobs if not o.exists()]

        def ready(cmd):  # a probe or an evaluation waits for its model
            model = Path(cmd[cmd.index("--model") + 1]) if "--model" in cmd else None
            return model is None or (model / "model_index.json").is_file()

        run_in_lanes(todo, work / "logs", args.lanes, ready)
    record = table(work, concepts, args.seeds, args.methods, results)
    write_json(results, record)  # in place: a --methods run reads the rows it keeps from this file
    print_table(record)


if __name__ == "__main__":
    main()
