"""Attack every model that benchmarks/robustness/models.py built, once per model and seed (the erased
role only: the base and the references are attacked as models of their own, and excess ASR is
composed per class and seed in table.py). Skips reports already written; several drivers can share
the work folder.

    python benchmarks/robustness/attack.py --work outputs/robustness [--lanes 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from models import CLASSES, DIGIT_METHODS, ROOT, T2I_METHODS, WORDS

DIGIT_ATTACKS = ("cce", "soft", "trajectory", "random", "seed_search")
T2I_ATTACKS = ("uda", "p4d", "ringabell", "cce", "soft", "trajectory", "random", "seed_search", "transfer")
SEEDS = (0, 1)
T2I_SEEDS = (0,)
INSTANCES = 8


def jobs(work: Path) -> list[tuple[str, list[str]]]:
    """(report name, erasekit attack arguments) of every model and seed: one digit complete (both seeds),
    then one word, then the next digit."""
    digits, words = [], []
    for c in CLASSES:
        models = [("base", "bundled:digits-cfg")] + [(m, str(work / f"digits-{m}-{c}")) for m in DIGIT_METHODS]
        digits.append([(f"digits-{method}-{c}-s{seed}", [
            "--model", model, "--forget", str(c), "--seed", str(seed), "--attack-base", "false",
            *[x for a in DIGIT_ATTACKS for x in ("--attack", a)]]) for seed in SEEDS for method, model in models])
    for w in WORDS:
        models = [("base", "bundled:digits-t2i"), ("retrain", str(work / "refs" / f"digits-t2i-without-{w}"))]
        models += [(m, str(work / f"t2i-{m}-{w}")) for m in T2I_METHODS]
        words.append([(f"t2i-{method}-{w}-s{seed}", [
            "--model", model, "--forget-prompts", f"a handwritten digit {w}", "--seed", str(seed),
            "--attack-base", "false", "--transfer-prompts", f"a handwritten {w}",
            "--transfer-prompts", f"the number {w} written by hand",
            *[x for a in T2I_ATTACKS for x in ("--attack", a)]]) for seed in T2I_SEEDS for method, model in models])
    ordered = [job for i, group in enumerate(digits) for job in group + (words[i] if i < len(words) else [])]
    return [(name, ["attack", *args, "--instances", str(INSTANCES), "--output", str(work / "attacks" / name)])
            for name, args in ordered]


def ready(args: list[str]) -> bool:
    model = args[args.index("--model") + 1]
    return model.startswith("bundled:") or Path(model).is_dir()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="outputs/robustness")
    parser.add_argument("--lanes", type=int, default=1)
    args = parser.parse_args()
    work = Path(args.work).resolve()
    (work / "attacks").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list = []
    while True:
        todo = [(n, a) for n, a in jobs(work) if not (work / "attacks" / f"{n}.log").exists()]
        if not todo and not running:
            return
        for name, cmd in [(n, a) for n, a in todo if ready(a)][: max(0, args.lanes - len(running))]:
            try:
                log = open(work / "attacks" / f"{name}.log", "x")
            except FileExistsError:
                continue
            running.append((subprocess.Popen([sys.executable, "-m", "erasekit.cli", *cmd], cwd=ROOT, env=env,
                                             stdout=log, stderr=subprocess.STDOUT), name, time.time()))
        time.sleep(5)
        for item in list(running):
            if item[0].poll() is not None:
                running.remove(item)
                print(f"{item[1]}: exit {item[0].returncode} in {time.time() - item[2]:.0f} s", flush=True)
        if not running and todo and not any(ready(a) for _, a in todo):
            time.sleep(30)  # waiting for models.py


if __name__ == "__main__":
    main()
