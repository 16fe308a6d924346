"""Before/after reports: report.json (versioned schema), report.md, a grid and a bar chart."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..io import atomic_file, write_json, write_text

REPORT_SCHEMA = "erasekit.report/v1"
SUMMARY_KEYS = ("UA", "RA", "FD", "noisy_rate_retain")
HELP = {
    "UA": "unlearning accuracy: forget-class samples NOT classified as their class (higher = erased)",
    "RA": "retain accuracy: mean accuracy over the kept classes (higher = preserved)",
    "FD": "Fréchet distance to real kept-class digits in the classifier's feature space (lower = better)",
    "noisy_rate_retain": "kept-class samples noisier than 99% of real digits (lower = better)",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def summary_table(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for key in SUMMARY_KEYS:
        b = before.get(key) if before else None
        a = after.get(key)
        delta = f"{a - b:+.3f}" if isinstance(a, float) and isinstance(b, float) else ""
        rows.append((key, _fmt(b) if b is not None else "", _fmt(a), delta))
    return rows


def format_summary(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> str:
    """A plain-text table for the terminal."""
    lines = [f"{'metric':<18}{'before':>10}{'after':>10}{'change':>10}"]
    lines += [f"{k:<18}{b:>10}{a:>10}{d:>10}" for k, b, a, d in summary_table(before, after)]
    return "\n".join(lines)


def accuracy_chart(path: Path, before: Sequence[float] | None, after: Sequence[float], forget: Sequence[int]):
    """Grouped bars of per-class accuracy, forget classes marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(range(len(after)))
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    width = 0.4
    if before is not None:
        ax.bar([c - width / 2 for c in classes], before, width, label="base", color="#8da0cb")
    ax.bar([c + width / 2 for c in classes], after, width, label="erased", color="#fc8d62")
    for c in forget:
        ax.axvspan(c - 0.5, c + 0.5, color="#e41a1c", alpha=0.08)
        ax.text(c, 1.03, "forget", ha="center", fontsize=8, color="#e41a1c")
        ax.text(c + width / 2, after[c] + 0.02, f"{after[c]:.2f}", ha="center", fontsize=7)
    ax.set_xticks(classes)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("class")
    ax.set_ylabel("classified as intended")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(out_dir: Path, before: Mapping[str, Any] | None, after: Mapping[str, Any],
                 settings: Mapping[str, Any], grid_name: str = "grid.png", chart_name: str = "accuracy.png") -> Path:
    """Write report.json and report.md into `out_dir` (grid and chart are written by the caller)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "report.json", {
        "schema": REPORT_SCHEMA,
        "erasekit_version": __version__,
        "settings": dict(settings),
        "before": dict(before) if before else None,
        "after": dict(after),
    })
    forget = settings.get("forget", [])
    lines = [
        "# erasekit report",
        "",
        f"Model `{settings.get('model')}` against base `{settings.get('baseline')}`; forget classes {forget}.",
        "",
        "| metric | base | erased | change |",
        "|---|---|---|---|",
        *[f"| {k} | {b} | {a} | {d} |" for k, b, a, d in summary_table(before, after)],
        "",
        *[f"- **{k}**: {HELP[k]}" for k in SUMMARY_KEYS],
        "",
        "## Samples (rows are classes; base left, erased right; forget rows outlined in red)",
        "",
        f"![grid]({grid_name})",
        "",
        "## Per-class accuracy",
        "",
        f"![per-class accuracy]({chart_name})",
        "",
        "| class | " + " | ".join(str(c) for c in range(len(after["per_class_accuracy"]))) + " |",
        "|---|" + "---|" * len(after["per_class_accuracy"]),
    ]
    if before:
        lines.append("| base | " + " | ".join(_fmt(a) for a in before["per_class_accuracy"]) + " |")
    lines.append("| erased | " + " | ".join(_fmt(a) for a in after["per_class_accuracy"]) + " |")
    lines += ["", "## Settings", "", "```", *[f"{k}: {v}" for k, v in settings.items()], "```", ""]
    write_text(out_dir / "report.md", "\n".join(lines))
    return out_dir / "report.md"
