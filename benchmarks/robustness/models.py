"""Build every model the robustness benchmark attacks: each method's erasure of each class (or digit
word) and the exact-unlearning references, with the shipped recipes. Skips models already built.

    python benchmarks/robustness/models.py --work outputs/robustness [--lanes 2]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from lanes import ROOT, run_in_lanes

CLASSES = (3, 5, 8)
DIGIT_METHODS = {
    "salun": ["--config", "configs/digits.yaml"],
    "esd": ["--config", "configs/digits.yaml", "--method", "esd"],
    "rl": ["--config", "configs/digits.yaml", "--method", "rl"],
    "ga": ["--config", "configs/digits.yaml", "--method", "ga"],
    "oneshot": ["--config", "configs/digits-oneshot.yaml"],
    "retrain": ["--config", "configs/digits-retrain.yaml"],
}
WORDS = ("seven", "eight")
T2I_METHODS = ("salun", "esd", "uce")


def t2i_recipe(work: Path, word: str) -> Path:
    """configs/digits-t2i.yaml for `word`: the seven recipe with seven and `word` swapped."""
    return word_recipe(work, "configs/digits-t2i.yaml", word, work)


def word_recipe(work: Path, recipe: str, word: str, folder: Path | None = None) -> Path:
    """A seven recipe with seven and `word` swapped as whole words (the file itself for seven), written
    to `folder` (work/recipes)."""
    text = (ROOT / recipe).read_text()
    if word != "seven":  # whole words only: null_weight keeps its "eight"
        text = re.sub(rf"\b(seven|{word})\b", lambda m: word if m.group(1) == "seven" else "seven", text)
    folder = folder or work / "recipes"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{Path(recipe).stem}-{word}.yaml"
    path.write_text(text)
    return path


def commands(work: Path) -> list[tuple[Path, list[str]]]:
    """(output, erasekit arguments), in the order they are built: one class (and one word) complete first."""
    def digits(m, c):
        return work / f"digits-{m}-{c}", ["erase", *DIGIT_METHODS[m], "--forget", str(c)]

    def t2i(m, w):
        return work / f"t2i-{m}-{w}", ["erase", "--config", str(t2i_recipe(work, w)), "--method", m]

    def reference(w):
        return work / "refs" / f"digits-t2i-without-{w}", ["train-base", "digits-t2i", "--exclude", w,
                                                            "--output-dir", str(work / "refs")]

    out = []
    for i, c in enumerate(CLASSES):
        out += [digits(m, c) for m in DIGIT_METHODS if m != "retrain"] + [digits("retrain", c)]
        if i < len(WORDS):
            out += [t2i(m, WORDS[i]) for m in T2I_METHODS] + [reference(WORDS[i])]
    return [(o, args + (["--output-dir", str(o)] if args[0] == "erase" else [])) for o, args in out]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="outputs/robustness")
    parser.add_argument("--lanes", type=int, default=2)
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    run_in_lanes(lambda: [(o.name, a) for o, a in commands(work) if not (o.exists() or o.is_symlink())],
                 work, args.lanes)  # a link: built elsewhere


if __name__ == "__main__":
    main()
