"""Attack every model that benchmarks/robustness/models.py built, once per model and seed (the erased
role only: the base and the references are attacked as models of their own, and excess ASR is
composed per class and seed in table.py). Skips reports already written; several drivers can share
the work folder.

    python benchmarks/robustness/attack.py --work outputs/robustness [--lanes 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lanes import run_in_lanes
from models import CLASSES, DIGIT_METHODS, T2I_METHODS, WORDS

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
    run_in_lanes(lambda: jobs(work), work / "attacks", args.lanes, ready)


if __name__ == "__main__":
    main()
