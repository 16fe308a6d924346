"""Compose the robustness table from the reports of attack.py: per family, method and attack, the mean
ASR, pre-ASR and excess ASR over the retrained reference of the same class (or digit word) and seed, and
the time per instance; writes benchmarks/results/robustness-digits.json, the Markdown table
benchmarks/robustness/README.md (between its TABLE markers) and a plot.

    python benchmarks/robustness/table.py --work outputs/robustness
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
NAME = re.compile(r"(?P<family>digits|t2i)-(?P<method>[a-z]+)-(?P<concept>\w+?)-s(?P<seed>\d+)$")


def collect(work: Path) -> dict:
    """{(family, concept, seed): {method: {attack: row}}} of every finished report."""
    found: dict = defaultdict(dict)
    for report in sorted((work / "attacks").glob("*/report.json")):
        match = NAME.match(report.parent.name)
        if not match:
            continue
        rows = {r["attack"]: r for r in json.loads(report.read_text())["attacks"] if r["role"] == "erased"}
        key = (match["family"], match["concept"], int(match["seed"]))
        found[key][match["method"]] = rows
    return found


def table(found: dict) -> list[dict]:
    cells: dict = defaultdict(lambda: defaultdict(list))
    for (family, concept, seed), methods in found.items():
        reference = methods.get("retrain", {})
        for method, rows in methods.items():
            for attack, row in rows.items():
                cell = cells[(family, method, attack)]
                cell["asr"].append(row["asr"])
                cell["pre_asr"].append(row["pre_asr"])
                cell["s_per_instance"].append(row["wall_s_per_instance"])
                cell["concepts"].append(f"{concept}/s{seed}")
                if attack in reference:
                    cell["excess_asr"].append(row["asr"] - reference[attack]["asr"])
    out = []
    for (family, method, attack), cell in sorted(cells.items()):
        out.append({"family": family, "method": method, "attack": attack, "runs": len(cell["asr"]),
                    "concepts": sorted(cell["concepts"]),
                    **{k: float(np.mean(cell[k])) if cell[k] else None
                       for k in ("asr", "pre_asr", "excess_asr", "s_per_instance")}})
    return out


def markdown(rows: list[dict]) -> str:
    def pct(v):
        return "—" if v is None else f"{100 * v:+.0f}" if v < 0 else f"{100 * v:.0f}"

    lines = []
    for family in ("digits", "t2i"):
        mine = [r for r in rows if r["family"] == family]
        if not mine:
            continue
        attacks = sorted({r["attack"] for r in mine})
        lines += [f"### {'bundled:digits-cfg' if family == 'digits' else 'bundled:digits-t2i'}: ASR % "
                  "(excess over retrain, points)", "",
                  "| method | " + " | ".join(attacks) + " |", "|---|" + "---|" * len(attacks)]
        for method in sorted({r["method"] for r in mine}, key=lambda m: (m in ("base", "retrain"), m)):
            cells = {r["attack"]: r for r in mine if r["method"] == method}
            lines.append(f"| {method} | " + " | ".join(
                f"{pct(cells[a]['asr'])} ({pct(cells[a]['excess_asr'])})" if a in cells else "—" for a in attacks) + " |")
        runs = sorted({c for r in mine for c in r["concepts"]})
        lines += ["", f"Runs (concept/seed): {', '.join(runs)}. Seconds per instance (mean over models): " + ", ".join(
            f"{a} {np.mean([r['s_per_instance'] for r in mine if r['attack'] == a]):.1f}" for a in attacks) + ".", ""]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = [f for f in ("digits", "t2i") if any(r["family"] == f for r in rows)]
    fig, axes = plt.subplots(1, len(families), figsize=(7 * len(families), 4), squeeze=False)
    for ax, family in zip(axes[0], families):
        mine = [r for r in rows if r["family"] == family and r["excess_asr"] is not None]
        methods = sorted({r["method"] for r in mine})
        attacks = sorted({r["attack"] for r in mine})
        width = 0.8 / max(1, len(attacks))
        for j, attack in enumerate(attacks):
            values = [next((r["excess_asr"] for r in mine if r["method"] == m and r["attack"] == attack), 0)
                      for m in methods]
            ax.bar(np.arange(len(methods)) + j * width, values, width, label=attack)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods)
        ax.set_ylabel("excess ASR over retrain")
        ax.set_title(family)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="outputs/robustness")
    args = parser.parse_args()
    rows = table(collect(Path(args.work)))
    (RESULTS / "robustness-digits.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, RESULTS / "robustness-digits.png")
    readme = HERE / "README.md"
    text = readme.read_text()
    start, end = "<!-- TABLE -->", "<!-- /TABLE -->"
    text = text[: text.index(start) + len(start)] + "\n" + markdown(rows) + "\n" + text[text.index(end):]
    readme.write_text(text)
    print(markdown(rows))


if __name__ == "__main__":
    main()
