"""Class forgetting on the bundled digits model: every method on the same classes and seeds.

For each method, class and seed the method's recipe erases the class (evaluation off), then the
erased model draws `samples_per_class` samples of every class with the evaluator's seed scheme
(`eval_seed + c*N + i`), the bundled judge labels them, and the evaluator's pure metric functions
give UA, RA, retain FD (to real kept-class digits) and the noisy share. `retrain` (retraining from
scratch without the class, configs/digits-retrain.yaml) is the reference of ToW:

    ToW = (1 - |UA - UA_r|) (1 - |RA - RA_r|) (1 - min(1, |FD - FD_r| / FD_r))

Rows are appended to a JSON-lines file as they finish, so a long run can be resumed (finished rows
are skipped) and shared out over machines; `--report` writes the Markdown table and the plot.
`--workers N` runs N erasures at once in spawned processes (retrain first, then seed by seed), for a
machine with many cores or a GPU that one small erasure leaves idle; `--rows` keeps such a run's rows
apart, and `--report --rows` writes its own page beside this script.

    python benchmarks/quality/bench_digits_classes.py --methods salun,rl,esd,ga,retrain --classes 0-9 --seeds 0,1,2
    python benchmarks/quality/bench_digits_classes.py --report
    python benchmarks/quality/bench_digits_classes.py --workers 12 --rows benchmarks/results/quality-digits-cuda.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).parents[2]
RESULTS = Path(__file__).parents[1] / "results"
ROWS = RESULTS / "quality-digits.jsonl"
CUDA_ROWS = RESULTS / "quality-digits-cuda.jsonl"  # the run of every method and class on one H200
NOISE = {"retain_target": "noise", "alpha": 2.0}  # the retain term of the rows before the teacher recipe
ALL_ZERO = {"scope": "all", "factors": [0.0]}  # one-shot's candidates and factor before scope no-time
RECIPES = {  # method -> (config file, overrides); keys of other methods are dropped from the file
    "salun": ("configs/digits.yaml", {}),
    "salun-noise": ("configs/digits.yaml", NOISE),  # the recipe before retain_target: teacher (issue 8)
    "rl": ("configs/digits.yaml", {"method": "rl", **NOISE}),
    "esd": ("configs/digits.yaml", {"method": "esd", "scope": "all", "negative_guidance": 1.0, "alpha": 2.0}),
    "ga": ("configs/digits.yaml", {"method": "ga", "max_steps": 30, "alpha": 2.0}),
    "retrain": ("configs/digits-retrain.yaml", {}),
    # A second exact unlearning: retraining again with other initial weights (and, run at another seed,
    # another data order and noise). Its ToW against `retrain` is what exact unlearning itself scores.
    "retrain-repeat": ("configs/digits-retrain.yaml", {"init_seed": 1}),
    "oneshot": ("configs/digits-oneshot.yaml", {}),
    "oneshot-codes": ("configs/digits-oneshot.yaml", {"inputs": "codes"}),
    "oneshot-all-zero": ("configs/digits-oneshot.yaml", ALL_ZERO),  # the one-shot recipe before scope no-time
    "oneshot-codes-all-zero": ("configs/digits-oneshot.yaml", {"inputs": "codes", **ALL_ZERO}),
    "salun-fisher": ("configs/digits.yaml", {"saliency": "fisher", **NOISE}),
    "salun-rum": ("configs/digits.yaml", {"refine": "rum", "refine_steps": [100, 100, 100], **NOISE}),
    "salun-rum-cfg_gain": ("configs/digits.yaml", {"refine": "rum", "refine_steps": [100, 100, 100],
                                                   "refine_proxy": "cfg_gain", **NOISE}),
}


def recipe_values(path: str, overrides: dict) -> dict:
    """A config file with overrides; `erasekit.erase` sets aside the keys of the file's own method that the
    overriding method does not take."""
    from erasekit.config import load_yaml

    return {**load_yaml(ROOT / path), **overrides}


def recipe(method: str, forget: int, seed: int, output_dir: str) -> dict:
    return {**recipe_values(*RECIPES[method]), "forget": [forget], "seed": seed, "output_dir": output_dir,
            "overwrite": True, "evaluate": False}


def samples(model, judge, n: int, eval_seed: int, device: str = "cpu") -> dict:
    """Every class drawn with the evaluator's seed scheme, and the judge's labels and features."""
    from erasekit.pipelines.adapters import adapter_for
    from erasekit.pipelines.generation import generate_class_samples
    from erasekit.pipelines.loading import load_pipeline

    pipe = load_pipeline(model).to(device)
    pipe.set_progress_bar_config(disable=True)
    classes = adapter_for(pipe).num_classes
    images, labels = generate_class_samples(pipe, range(classes), n, eval_seed, 50, 3.0, 250)
    preds, feats = judge.predict(list(images))
    return {"images": images, "labels": labels, "preds": torch.tensor(preds), "feats": feats, "classes": classes}


def metrics_for(drawn: dict, forget: int, judge, real_cache: dict) -> dict:
    from erasekit.eval.class_conditional import class_metrics, real_reference

    if forget not in real_cache:
        real_cache[forget] = real_reference(judge, [forget])
    m = class_metrics(drawn["images"], drawn["labels"], drawn["preds"], drawn["feats"], [forget], drawn["classes"],
                      real_cache[forget])
    return {k: m[k] for k in ("UA", "RA", "FD", "noisy_rate_retain")}


def parse_range(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def done_rows(path: Path = ROWS) -> list[dict]:
    """The rows of a JSON-lines results file; none before its first row."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def erase_and_measure(values: dict, forget: int, judge, real: dict, n: int = 50, eval_seed: int = 1234,
                      device: str = "cpu"):
    """Erase with the config `values` into a temporary output directory (replacing its `output_dir`),
    judge its samples, and return (metrics, erase seconds); the directory is removed."""
    import erasekit

    work = Path(tempfile.mkdtemp(prefix="erasekit-quality-"))
    try:
        started = time.time()
        erasekit.erase(**{**values, "output_dir": str(work / "out")})
        seconds = time.time() - started
        return metrics_for(samples(work / "out", judge, n, eval_seed, device), forget, judge, real), seconds
    finally:
        shutil.rmtree(work, ignore_errors=True)


def device() -> str:
    """Where erasures run (Accelerate takes CUDA when there is one), and so where samples are drawn."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name() -> str:
    """The device recorded in the rows: the CUDA device's name, or "cpu"."""
    return torch.cuda.get_device_name() if device() == "cuda" else "cpu"


def job_order(methods: list[str], classes: list[int], seeds: list[int]) -> list[tuple[str, int, int]]:
    """(method, class, seed) jobs: retrain (the longest, and every ToW needs it) first, then seed by seed
    and class by class, so that a run cut short has whole seeds of every method rather than one method."""
    jobs = [("retrain", c, seeds[0]) for c in classes] if "retrain" in methods else []
    return jobs + [(m, c, s) for s in seeds for c in classes for m in methods if m != "retrain"]


_WORKER: dict = {}


def _start_worker(n: int, eval_seed: int, threads: int) -> None:
    from erasekit.eval.measure import Judge
    from erasekit.eval.suite import EvalSuite

    torch.set_num_threads(threads)
    _WORKER.update(judge=Judge(EvalSuite(metrics=["classifier"])), real={}, n=n, eval_seed=eval_seed)


def _measure_job(job: tuple[str, int, int]) -> dict:
    """One job's row, or {"error": ...} so that one failing method does not stop the others."""
    method, c, seed = job
    w = _WORKER
    try:
        metrics, seconds = erase_and_measure(recipe(method, c, seed, ""), c, w["judge"], w["real"], w["n"],
                                             w["eval_seed"], device())
    except Exception:  # noqa: BLE001 - reported by the parent, which goes on with the other jobs
        return {"method": method, "class": c, "seed": seed, "error": traceback.format_exc()}
    return {"method": method, "class": c, "seed": seed, **metrics, "erase_seconds": round(seconds, 1),
            "samples_per_class": w["n"], "eval_seed": w["eval_seed"], "date": time.strftime("%Y-%m-%d"),
            "machine": platform.node() or "vm", "device": device_name(), "torch": torch.__version__}


def run(methods: list[str], classes: list[int], seeds: list[int], n: int, eval_seed: int, rows: Path = ROWS,
        workers: int = 1) -> None:
    have = {(r["method"], r["class"], r["seed"]) for r in done_rows(rows)}
    jobs = [job for job in job_order(methods, classes, seeds) if job not in have]
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else torch.get_num_threads()
    _start_worker(n, eval_seed, threads)
    if ("base", -1, 0) not in have:
        w = _WORKER
        drawn = samples("bundled:digits-cfg", w["judge"], n, eval_seed, device())
        append_row({"method": "base", "class": -1, "seed": 0, "device": device_name(),
                    "per_class": {str(c): metrics_for(drawn, c, w["judge"], w["real"]) for c in range(drawn["classes"])}},
                   rows)
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(workers, _start_worker, (n, eval_seed, threads)) \
        if workers > 1 else None
    command = " ".join(["python", *sys.argv])
    try:
        for row in pool.imap_unordered(_measure_job, jobs) if pool else map(_measure_job, jobs):
            if "error" in row:
                print(f"FAILED {row['method']} class {row['class']} seed {row['seed']}:\n{row['error']}", flush=True)
                continue
            row["command"] = command
            print(json.dumps(row), flush=True)
            append_row(row, rows)
    finally:
        if pool:  # every job has returned, or the run was interrupted: no worker is left running
            pool.terminate()


def append_row(row: dict, path: Path = ROWS) -> None:
    """Append one finished row, so that an interrupted run resumes after it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def tow(row: dict, ref: dict) -> float:
    return ((1 - abs(row["UA"] - ref["UA"])) * (1 - abs(row["RA"] - ref["RA"]))
            * (1 - min(1.0, abs(row["FD"] - ref["FD"]) / ref["FD"])))


def report(path: Path = ROWS) -> str:
    rows = done_rows(path)
    base = next((r for r in rows if r["method"] == "base"), None)
    retrain = {r["class"]: r for r in rows if r["method"] == "retrain"}
    methods = [m for m in RECIPES if any(r["method"] == m for r in rows)]
    lines = ["| method | runs | classes | UA mean (min) | RA drop mean (max), points | FD mean | FD / base FD mean (max) "
             "| FD / retrain FD mean (max) | noisy retain share mean (max) | ToW mean | erase s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def mean_max(values: list[float], digits: int = 2) -> str:
        return f"{np.mean(values):.{digits}f} ({max(values):.{digits}f})" if values else "n/a"

    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        drops = [100 * (base["per_class"][str(r["class"])]["RA"] - r["RA"]) for r in mine] if base else []
        tows = [tow(r, retrain[r["class"]]) for r in mine if r["class"] in retrain]
        ratios = [r["FD"] / base["per_class"][str(r["class"])]["FD"] for r in mine] if base else []
        to_retrain = [r["FD"] / retrain[r["class"]]["FD"] for r in mine if r["class"] in retrain]
        noisy = [r["noisy_rate_retain"] for r in mine]
        lines.append(
            f"| {method} | {len(mine)} | {','.join(str(c) for c in sorted({r['class'] for r in mine}))} | "
            f"{np.mean([r['UA'] for r in mine]):.3f} ({min(r['UA'] for r in mine):.3f}) | "
            f"{mean_max(drops)} | {np.mean([r['FD'] for r in mine]):.1f} | {mean_max(ratios)} | {mean_max(to_retrain)} | "
            f"{mean_max(noisy, 3)} | "
            + (f"{np.mean(tows):.3f} (n={len(tows)})" if tows else "n/a (no retrain rows)") + " | "
            f"{np.mean([r['erase_seconds'] for r in mine]):.0f} |")
    if base:
        fd = np.mean([v["FD"] for v in base["per_class"].values()])
        noisy = np.mean([v["noisy_rate_retain"] for v in base["per_class"].values()])
        to_retrain = [base["per_class"][str(c)]["FD"] / retrain[c]["FD"] for c in sorted(retrain)]
        lines.append(f"| base (not erased) | 1 | all | {np.mean([v['UA'] for v in base['per_class'].values()]):.3f} | 0 "
                     f"| {fd:.1f} | 1 | {mean_max(to_retrain)} | {noisy:.3f} | | |")
        caps = [tow({**base["per_class"][str(c)], "UA": 1.0}, retrain[c]) for c in sorted(retrain)]
        if caps:
            lines.append(f"| *keeps the base exactly* (computed) | | {','.join(str(c) for c in sorted(retrain))} | 1 | 0 "
                         f"| | 1 | {mean_max(to_retrain)} | | {np.mean(caps):.3f} (n={len(caps)}) | |")
    _plot(rows, methods, RESULTS / f"{path.stem}.png")
    return "\n".join(lines)


def paired_table(rows: list[dict], method: str = "salun") -> str:
    """ToW of `method` against each other method on the (class, seed) pairs both ran and retrain
    covers: the comparison the targets ask for, without one method's easier classes in its mean."""
    retrain = {r["class"]: r for r in rows if r["method"] == "retrain"}
    ours = {(r["class"], r["seed"]): r for r in rows if r["method"] == method and r["class"] in retrain}
    lines = [f"| against | shared (class, seed) pairs | {method} ToW | their ToW | {method} ahead on |",
             "|---|---|---|---|---|"]
    for other in (m for m in RECIPES if m not in (method, "retrain")):
        theirs = {(r["class"], r["seed"]): r for r in rows if r["method"] == other}
        pairs = sorted(set(ours) & set(theirs))
        if not pairs:
            continue
        mine = [tow(ours[k], retrain[k[0]]) for k in pairs]
        other_tow = [tow(theirs[k], retrain[k[0]]) for k in pairs]
        ahead = sum(a > b for a, b in zip(mine, other_tow))
        lines.append(f"| {other} | {len(pairs)} (classes {','.join(str(c) for c in sorted({c for c, _ in pairs}))}) | "
                     f"{np.mean(mine):.3f} | {np.mean(other_tow):.3f} | {ahead} of {len(pairs)} |")
    return "\n".join(lines)


def per_run_table(path: Path = ROWS) -> str:
    rows = done_rows(path)
    base = next((r for r in rows if r["method"] == "base"), None)
    lines = ["| method | class | seed | UA | RA | retain FD | base FD | FD / base FD | noisy retain | erase s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in rows if r["method"] != "base"), key=lambda r: (r["method"], r["seed"], r["class"])):
        b = base["per_class"][str(r["class"])]["FD"] if base else float("nan")
        lines.append(f"| {r['method']} | {r['class']} | {r['seed']} | {r['UA']:.3f} | {r['RA']:.3f} | {r['FD']:.1f} | "
                     f"{b:.1f} | {r['FD'] / b:.2f} | {r['noisy_rate_retain']:.3f} | {r['erase_seconds']:.1f} |")
    return "\n".join(lines)


def write_readme(table: str, path: Path = ROWS) -> None:
    if path.resolve() != ROWS.resolve():
        write_page(table, path)
        return
    rows = done_rows()
    dates = sorted({r.get("date", "") for r in rows if r.get("date")})
    text = f"""# Quality: class forgetting on the digits model

Written by `python benchmarks/quality/bench_digits_classes.py --report` from
`benchmarks/results/quality-digits.jsonl` (runs of {", ".join(dates) or "n/a"}, 2-core CPU). Rows were
produced by

```bash
python benchmarks/quality/bench_digits_classes.py --methods salun-noise --classes 0-9 --seeds 0,1,2
python benchmarks/quality/bench_digits_classes.py --methods oneshot-all-zero,oneshot-codes-all-zero,ga --classes 0-9 --seeds 0
python benchmarks/quality/bench_digits_classes.py --methods rl,esd --classes 8,0,9 --seeds 0
python benchmarks/quality/bench_digits_classes.py --methods salun-rum-cfg_gain,salun-fisher --classes 8 --seeds 0
python benchmarks/quality/bench_digits_classes.py --methods retrain --classes 8 --seeds 0
python benchmarks/quality/bench_digits_classes.py --methods retrain --classes 0,9 --seeds 0
python benchmarks/quality/bench_digits_classes.py --methods retrain --classes 1 --seeds 0
python benchmarks/quality/bench_digits_classes.py --methods salun-rum --classes 8 --seeds 0
python benchmarks/quality/bench_digits_classes.py --methods salun --classes 0,1,8,9,2,3,4,5,6,7 --seeds 0,1,2
python benchmarks/quality/bench_digits_classes.py --methods esd,rl --classes 1 --seeds 0
python benchmarks/quality/bench_digits_classes.py --methods esd --classes 0,1,8,9 --seeds 1
python benchmarks/quality/bench_digits_classes.py --methods oneshot,oneshot-codes --classes 0-9 --seeds 0
python benchmarks/quality/bench_digits_classes.py --methods retrain --classes 2,3 --seeds 0
python benchmarks/quality/bench_digits_classes.py --methods retrain-repeat --classes 8,3,0,2 --seeds 1
python benchmarks/quality/bench_digits_classes.py --methods retrain-repeat --classes 1,9 --seeds 1
```

Each row erases one class with the method's recipe (`RECIPES` in the script: salun is
`configs/digits.yaml` as shipped, with `retain_target: teacher` and `alpha: 10`; salun-noise the recipe
before, SalUn's retain diffusion loss to the sampled noise with `alpha: 2`, as are rl, salun-fisher and
the salun-rum rows; oneshot is
`configs/digits-oneshot.yaml` (`scope: no-time`, factors 0, -0.25, -0.5, -1 chosen by its check),
oneshot-codes the same with `inputs: codes`; the two `-all-zero` rows are the one-shot recipe before, every
weight a candidate and the factor 0 (their rows were run as `oneshot` and `oneshot-codes`); salun-fisher
`configs/digits.yaml` with `saliency: fisher`, salun-rum the same recipe refined by RUM with 100 steps per
subset, `refine: rum`, split by the default proxy `loss`; salun-rum-cfg_gain the same split by the CFG
gain, the default before benchmarks/quality/memorization.md showed that it ranks memorization
inversely), then judges 50 samples per
class (DDIM 50 steps, guidance 3, seeds `1234 + 50 c + i`) with the bundled CNN. RA drop is against the
base on the same samples; FD is the retain Fréchet distance to real kept-class digits in the judge's
features. The noisy retain share is the share of retain samples whose total variation exceeds the
99th percentile of real digits' (`eval.metrics.noisy_rate`): the judge's features hardly see speckle
noise, so FD can stay at the base's while the samples are visibly noisy. "erase s" is the wall time of
`erasekit.erase` without evaluation (load, mask, training or edit, write); rows ran one at a time, except
the rl and esd rows on classes 0, 8 and 9 at seed 0, which shared the 2 cores with other jobs (their
times are inflated; alone, esd and rl took 69 s and 61 s on class 1). ToW needs
`retrain` rows (retraining without the class, `configs/digits-retrain.yaml`); where there are none it
says so.

{table}

The row *keeps the base exactly* is computed, not run: the ToW of a model that erases the class fully
(UA 1) while its retain samples stay the base's (the base's RA and retain FD), against each class's retrain
row. It is the most any method can score that holds the kept classes at the base, as SalUn's teacher
retain term does: retraining without a class moves the retain FD by itself, and ToW rewards matching it.
The row *retrain-repeat* is exact unlearning done a second time: retraining without the class again,
from other initial weights (`init_seed: 1`) at seed 1. Its ToW against the `retrain` row is what
exact unlearning itself scores when the reference is one retrained model.

Every class with its retrain reference, on one machine: [{CUDA_ROWS.stem}.md]({CUDA_ROWS.stem}.md) (an
H200, where salun, esd, rl, ga and retrain ran on classes 0-9 at seeds 0 and 1). The same runs on both
machines: {agreement(rows, done_rows(CUDA_ROWS), f"`{CUDA_ROWS.name}`")}

SalUn against each other method on the same classes and seeds (ToW per pair, then averaged):

{paired_table(rows)}

![UA and FD per class](../results/quality-digits.png)

## Every run

{per_run_table()}
"""
    (Path(__file__).parent / "README.md").write_text(text)


def agreement(rows: list[dict], other: list[dict], where: str) -> str:
    """How far the runs of two rows files that share (method, class, seed) differ: the same erasure
    measured on two machines."""
    theirs = {(r["method"], r["class"], r["seed"]): r for r in other if r["method"] != "base"}
    pairs = [(r, theirs[k]) for r in rows if (k := (r["method"], r["class"], r["seed"])) in theirs]
    if not pairs:
        return f"no run here is also in {where}."
    d_ua = max(abs(a["UA"] - b["UA"]) for a, b in pairs)
    d_fd = max(abs(a["FD"] - b["FD"]) for a, b in pairs)
    methods = ", ".join(sorted({a["method"] for a, _ in pairs}))
    return (f"{len(pairs)} runs ({methods}) are also in {where}: their UA differs by at most {d_ua:.2f} and "
            f"their retain FD by at most {d_fd:.2f}.")


def write_page(table: str, path: Path) -> None:
    """The page of a rows file other than the default one: `<stem>.md` beside this script, with the
    commands and devices its rows record."""
    rows = done_rows(path)
    dates = sorted({r["date"] for r in rows if r.get("date")})
    devices = sorted({r["device"] for r in rows if r.get("device")})
    commands = sorted({r["command"] for r in rows if r.get("command")})
    torches = sorted({r["torch"] for r in rows if r.get("torch")})
    coverage = "; ".join(
        f"{m}: " + ", ".join(f"seed {seed} x{sum(1 for r in rows if r['method'] == m and r['seed'] == seed)}"
                             for seed in sorted({r["seed"] for r in rows if r["method"] == m}))
        for m in dict.fromkeys(r["method"] for r in rows if r["method"] != "base"))
    text = f"""# Quality: class forgetting on the digits model, `{path.name}`

Written by `python benchmarks/quality/bench_digits_classes.py --report --rows {os.path.relpath(path, ROOT)}`
(runs of {", ".join(dates) or "n/a"}, on {", ".join(devices) or "n/a"}, torch {", ".join(torches) or "n/a"}).
Rows were produced by

```bash
{chr(10).join(commands)}
```

Runs per method and seed (a run cut short has whole seeds first): {coverage}.

The methods, metrics and ToW are those of [README.md](README.md); every row here, the base and the retrain
references included, comes from this file, so the comparison is on one machine. "erase s" ran beside
other erasures in `--workers` processes: compare it within this page only.

{table}

SalUn against each other method on the same classes and seeds (ToW per pair, then averaged):

{paired_table(rows)}

The same runs on another machine: {agreement(rows, done_rows(), f"`{ROWS.name}`, measured on the 2-core CPU")}

![UA and FD per class](../results/{path.stem}.png)

## Every run

{per_run_table(path)}
"""
    (Path(__file__).parent / f"{path.stem}.md").write_text(text)


def _plot(rows, methods, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), dpi=110)
    colors = plt.get_cmap("tab20").colors  # more methods than the default cycle's 10 colours
    for i, method in enumerate(methods):
        mine = [r for r in rows if r["method"] == method]
        classes = sorted({r["class"] for r in mine})
        for ax, key in zip(axes, ("UA", "FD")):
            means = [np.mean([r[key] for r in mine if r["class"] == c]) for c in classes]
            ax.plot(classes, means, marker="o", label=method, color=colors[2 * i % 20 + 2 * i // 20 % 2])
            ax.set_xlabel("forgotten class")
            ax.set_ylabel(key)
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="salun,rl,esd,ga,retrain")
    parser.add_argument("--classes", default="0-9")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--samples-per-class", type=int, default=50)
    parser.add_argument("--eval-seed", type=int, default=1234)
    parser.add_argument("--rows", type=Path, default=ROWS, help="the JSON-lines results file (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=1, help="erasures at once, each in its own process")
    parser.add_argument("--report", action="store_true", help="print the Markdown table and write the plot")
    args = parser.parse_args()
    unknown = sorted(set(args.methods.split(",")) - set(RECIPES))
    if unknown or args.workers < 1:
        parser.error(f"unknown method {unknown[0]!r}; choose from {', '.join(RECIPES)}" if unknown
                     else "--workers must be at least 1")
    args.rows = args.rows.resolve()
    if args.report and not done_rows(args.rows):
        parser.error(f"--rows {args.rows} holds no rows to report; run the bench with that --rows first")
    if args.report:
        table = report(args.rows)
        print(table)
        write_readme(table, args.rows)
        return
    run(args.methods.split(","), parse_range(args.classes), parse_range(args.seeds), args.samples_per_class,
        args.eval_seed, args.rows, args.workers)


if __name__ == "__main__":
    main()
