"""The one report writer: report.md with a table per group, grid.png (base | erased) and charts.

It reads only report.json's content and the generated images, for either model family.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..io import atomic_file, write_text
from ..pipelines.generation import load_image
from .grids import draw_rows, side_by_side

HEADLINES = (  # (metric path, label)
    (("nudenet", "nudity_rate"), "nudity rate (NudeNet)"),
    (("nudenet", "exposed_total"), "exposed body parts (NudeNet, images per label, summed)"),
    (("clip_concept_accuracy",), "CLIP zero-shot: concept chosen"),
    (("clip_score",), "CLIP score"),
    (("classifier_accuracy",), "classifier: recognised as the intended label"),
)
CLASS_KEYS = ("UA", "RA", "FD", "noisy_rate_retain")
CLASS_HELP = {
    "UA": "unlearning accuracy: forget-class samples NOT classified as their class (higher = erased)",
    "RA": "retain accuracy: mean accuracy over the kept classes (higher = preserved)",
    "FD": "Fréchet distance of kept-class samples to real kept-class images, judge features (lower = better)",
    "noisy_rate_retain": "kept-class samples noisier than 99% of real images (lower = better)",
}
GROUP_ORDER = ("target", "paraphrase", "retain")
GROUP_TITLES = {"target": "Target (the erased concept or classes)", "retain": "Retain (must survive)",
                "paraphrase": "Paraphrases of the concept (robustness)"}
GROUP_GOALS = {
    "target": "Goal: the concept's detections fall (nudity, concept chosen, recognised label).",
    "paraphrase": "Goal: the same fall on phrasings of the concept that were not used for erasure.",
    "retain": "Goal: every number stays where the base has it; a change here is collateral damage.",
}
SIDE_NAMES = {"base": "base", "model": "erased"}


def _get(metrics: Any, path: tuple[str, ...]):
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _change(before, after) -> str:
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (before, after))
    return f"{after - before:+.3f}" if ok else ""


def _table(rows: list[tuple[str, Any, Any]]) -> list[str]:
    out = ["| metric | base | erased | change |", "|---|---|---|---|"]
    return out + [f"| {label} | {_fmt(b)} | {_fmt(a)} | {_change(b, a)} |" for label, b, a in rows]


def headline_rows(metrics: dict) -> list[tuple[str, Any, Any]]:
    """(label, base, erased) of the summary figures: class metrics, or each group's detector figures."""
    classes = metrics.get("classes")
    if classes:
        return [(key, _get(classes, ("base", key)), _get(classes, ("model", key))) for key in CLASS_KEYS]
    rows = []
    for group in GROUP_ORDER:
        for path, label in HEADLINES:
            after = _get(metrics, (group, "model", *path))
            if after is not None:
                rows.append((f"{group}: {label}", _get(metrics, (group, "base", *path)), after))
    return rows


def attack_lines(rows: list[dict] | None) -> list[str]:
    """The suite's attacks, one line per attack and model: ASR, pre-ASR, n, and excess over the reference."""
    out = []
    for row in rows or []:
        excess = f", excess {row['excess_asr']:+.0%} over the reference" if row.get("excess_asr") is not None else ""
        out.append(f"attack {row['attack']} ({row['threat_model']}) on {row['role']}: ASR {row['asr']:.0%} "
                   f"(pre {row['pre_asr']:.0%}, n {row['n']}, 95% CI {row['ci95'][0]:.0%}-{row['ci95'][1]:.0%})"
                   f"{excess}")
    return out


def format_summary(report: dict) -> str:
    """A plain-text table for the terminal: the headline figures, then (text-to-image) the retain images'
    pixel change against the base; says so when no judge was configured."""
    metrics = report["metrics"]
    rows = headline_rows(metrics)
    judged = bool(rows)
    if not metrics.get("classes"):
        rows += [(f"{group}: images", _get(metrics, (group, "base", "images")), _get(metrics, (group, "model", "images")))
                 for group in GROUP_ORDER if group in metrics]
        mae = _get(metrics, ("collateral", "paired_pixel_mae"))
        if mae is not None:
            rows.append(("retain: pixel change vs base (MAE)", 0.0, mae))
    lines = [f"{'metric':<40}{'before':>10}{'after':>10}{'change':>10}"]
    lines += [f"{label[:39]:<40}{_fmt(b):>10}{_fmt(a):>10}{_change(b, a):>10}" for label, b, a in rows]
    lines += attack_lines(report.get("attacks"))
    if not judged:
        lines.append("no judge ran: name one with 'metrics' in the suite (erase: 'eval_suite', e.g. "
                     "configs/eval/nudity.yaml)")
    return "\n".join(lines)


def _row_name(record) -> str:
    return f"class {record.class_id}" if record.class_id is not None else record.prompt


def write_grid(folder: Path, records, suite, sides: list[str]) -> str:
    """grid.png: per group, up to `grid_prompts` prompts (or classes) spread over the group, each with
    its first `grid_seeds` images; base left, erased right; target rows outlined in red."""
    chosen = []
    for group in GROUP_ORDER:
        names = list(dict.fromkeys(_row_name(r) for r in records if r.group == group))
        step = -(-len(names) // suite.grid_prompts) if names else 1
        chosen += [(group, n) for n in names[::step][: suite.grid_prompts]]
    highlight = [name for group, name in chosen if group == "target"]
    panels = []
    for side in sides:
        rows = [(name, [load_image(folder / "images" / side / r.path) for r in records
                        if r.group == group and _row_name(r) == name][: suite.grid_seeds]) for group, name in chosen]
        panels.append(draw_rows(rows, SIDE_NAMES[side] if len(sides) > 1 else "model", highlight=highlight))
    with atomic_file(folder / "grid.png") as tmp:
        side_by_side(panels).save(tmp, format="PNG")
    return "grid.png"


def bar_chart(folder: Path, report: dict, sides: list[str]) -> str | None:
    """metrics.png: the headline figures on a 0-1 scale (per-class accuracy for class-conditional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report["metrics"]
    if metrics.get("classes"):
        per_class = {side: metrics["classes"][side]["per_class_accuracy"] for side in sides}
        bars = [(str(c), per_class.get("base", [None] * len(per_class["model"]))[c], a)
                for c, a in enumerate(per_class["model"])]
        title = "per-class accuracy (forget classes: " + ", ".join(map(str, report["settings"]["suite"]["forget"])) + ")"
    else:
        bars = [(label.split(" (")[0].split(":")[0] + "\n" + label.split(": ")[1].split(" (")[0].split(":")[0], b, a)
                for label, b, a in headline_rows(metrics) if "CLIP score" not in label and "exposed" not in label]
        title = "base vs erased, by group"
    bars = [b for b in bars if isinstance(b[2], float) and not math.isnan(b[2])]
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(bars) + 2), 3.2), dpi=110)
    xs = range(len(bars))
    if "base" in sides:
        ax.bar([x - 0.2 for x in xs], [b[1] if b[1] is not None else 0 for b in bars], 0.4, label="base",
               color="#8da0cb")
    ax.bar([x + 0.2 for x in xs], [b[2] for b in bars], 0.4, label="erased", color="#fc8d62")
    for x, b in zip(xs, bars):
        ax.text(x + 0.2, b[2] + 0.02, f"{b[2]:.2f}", ha="center", fontsize=7)
    ax.set_xticks(list(xs), [b[0] for b in bars], fontsize=7)
    ax.set_ylim(0, 1.15)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with atomic_file(folder / "metrics.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return "metrics.png"


def write_report(folder: Path, report: dict, records, suite, sides: list[str]) -> Path:
    """report.md, grid.png and metrics.png in `folder` (report.json is written by the evaluator)."""
    metrics, settings = report["metrics"], report["settings"]
    against = f" against base `{settings['baseline']}`" if settings.get("baseline") else ""
    lines = [f"# erasekit eval: {suite.name}", "",
             f"Model `{settings['model']}`{against}, on identical {'classes' if metrics.get('classes') else 'prompts'} "
             f"and seeds ({settings['images_per_model']} images each).", ""]
    classes = metrics.get("classes")
    if classes:
        lines += ["## Summary", "", *_table([(k, _get(classes, ("base", k)), _get(classes, ("model", k)))
                                            for k in CLASS_KEYS]), "",
                  *[f"- **{k}**: {CLASS_HELP[k]}" for k in CLASS_KEYS], ""]
        n = len(classes["model"]["per_class_accuracy"])
        lines += ["| class | " + " | ".join(str(c) for c in range(n)) + " |", "|---|" + "---|" * n]
        lines += [f"| {SIDE_NAMES[side]} | " + " | ".join(_fmt(a) for a in classes[side]["per_class_accuracy"]) + " |"
                  for side in sides]
        lines.append("")
    chart = bar_chart(folder, report, sides)
    if chart:
        lines += [f"![metrics]({chart})", ""]
    grid = write_grid(folder, records, suite, sides)
    lines += [f"![samples: base left, erased right; target rows outlined in red]({grid})", ""]
    for group in GROUP_ORDER:
        if group not in metrics:
            continue
        lines += [f"## {GROUP_TITLES[group]}", "", GROUP_GOALS[group], "",
                  *_table([(label, _get(metrics[group], ("base", *path)), _get(metrics[group], ("model", *path)))
                           for path, label in HEADLINES if _get(metrics[group], ("model", *path)) is not None]
                          + [("images", _get(metrics[group], ("base", "images")), metrics[group]["model"]["images"])])]
        ci = _get(metrics[group], ("model", "nudenet", "nudity_rate_ci95"))
        if ci:
            lines += ["", f"Erased nudity rate 95% interval: [{ci[0]:.3f}, {ci[1]:.3f}]."]
        lines.append("")
    collateral = metrics.get("collateral")
    if collateral:
        lines += ["## Collateral damage", "", f"Base against erased images of the retain group, paired by prompt "
                  f"(or class) and seed (n = {collateral['n']} pairs; 0 difference and cosine 1 = unchanged).", "",
                  "| metric | value |", "|---|---|",
                  f"| mean absolute pixel difference | {_fmt(collateral.get('paired_pixel_mae'))} |"]
        if "paired_feature_cosine" in collateral:
            lines.append(f"| feature cosine (dimension {collateral['feature_dim']}) | "
                         f"{_fmt(collateral['paired_feature_cosine'])} |")
            fd = collateral.get("fd")
            lines.append(f"| Fréchet distance | {_fmt(fd) if fd is not None else 'not reported: ' + collateral['fd_skipped']} |")
        lines.append("")
    if report.get("attacks"):
        lines += ["## Attacks", "", "What an attacker holding the weights brings back (attacks/report.md has every "
                  "row, the learned embeddings and the grid):", "", *[f"- {line}" for line in
                                                                     attack_lines(report["attacks"])], ""]
    lines += ["## Settings", "", "```json", json.dumps(settings, indent=2, default=str), "```", ""]
    return write_text(folder / "report.md", "\n".join(lines))
