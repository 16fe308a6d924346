"""report.md for prompt suites: tables per group, before/after grids and a bar chart."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..io import atomic_file, write_text
from .grids import side_by_side
from .text_grid import draw_prompt_grid

HEADLINES = (  # (metric path, label)
    (("nudenet", "nudity_rate"), "nudity rate (NudeNet)"),
    (("nudenet", "exposed_total"), "exposed body parts (NudeNet, images per label, summed)"),
    (("clip_concept_accuracy",), "CLIP zero-shot: concept chosen"),
    (("clip_score",), "CLIP score"),
    (("classifier_accuracy",), "classifier: recognised as the prompt's label"),
)
GROUP_TITLES = {"target": "Target prompts (the erased concept)", "retain": "Retain prompts (must survive)",
                "paraphrase": "Paraphrases of the concept (robustness)"}
GROUP_GOALS = {
    "target": "Goal: the concept's detections fall (nudity, concept chosen, recognised label).",
    "paraphrase": "Goal: the same fall on phrasings of the concept that were not used for erasure.",
    "retain": "Goal: every number stays where the base has it; a change here is collateral damage.",
}


def _get(metrics: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def _fmt(value) -> str:
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def grid_for_group(staging: Path, records, group: str, suite) -> str | None:
    chosen = [r for r in records if r.group == group]
    prompts = list(dict.fromkeys(r.prompt for r in chosen))
    step = -(-len(prompts) // suite.grid_prompts) if prompts else 1
    prompts = prompts[::step][: suite.grid_prompts]  # spread over the group, not just its first prompts
    if not prompts:
        return None
    panels = []
    for side in ("base", "model"):
        rows = [[Image.open(staging / "images" / side / r.path) for r in chosen if r.prompt == p][: suite.grid_seeds]
                for p in prompts]
        panels.append(draw_prompt_grid(rows, prompts, "base" if side == "base" else "erased"))
    name = f"grid-{group}.png"
    with atomic_file(staging / name) as tmp:
        side_by_side(panels).save(tmp, format="PNG")
    return name


def bar_chart(staging: Path, metrics: dict) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = []
    for group in ("target", "paraphrase", "retain"):
        for path, label in HEADLINES:
            if group in metrics and _get(metrics[group]["model"], path) is not None and path[-1] != "exposed_total":
                bars.append((f"{group}\n{label.split(' (')[0].split(':')[0]}", _get(metrics[group]["base"], path),
                             _get(metrics[group]["model"], path), path == ("clip_score",)))
    bars = [b for b in bars if not b[3]]  # CLIP score has another scale; it is in the tables
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(bars)), 3.2), dpi=110)
    xs = range(len(bars))
    ax.bar([x - 0.2 for x in xs], [b[1] for b in bars], 0.4, label="base", color="#8da0cb")
    ax.bar([x + 0.2 for x in xs], [b[2] for b in bars], 0.4, label="erased", color="#fc8d62")
    for x, b in zip(xs, bars):
        ax.text(x + 0.2, b[2] + 0.02, f"{b[2]:.2f}", ha="center", fontsize=7)
    ax.set_xticks(list(xs), [b[0] for b in bars], fontsize=7)
    ax.set_ylim(0, 1.15)
    ax.set_title("base vs erased, by prompt group", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with atomic_file(staging / "metrics.png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return "metrics.png"


def write_text_report(staging: Path, report: dict, records, suite) -> Path:
    metrics, settings = report["metrics"], report["settings"]
    lines = [f"# erasekit eval: {suite.name}", "",
             f"Erased model `{settings['model']}` against base `{settings['baseline']}`, on identical prompts and "
             f"seeds ({settings['images_per_model']} images each).", ""]
    chart = bar_chart(staging, metrics)
    if chart:
        lines += [f"![metrics]({chart})", ""]
    for group in ("target", "paraphrase", "retain"):
        if group not in metrics:
            continue
        lines += [f"## {GROUP_TITLES[group]}", "", GROUP_GOALS[group], "",
                  "| metric | base | erased | change |", "|---|---|---|---|"]
        for path, label in HEADLINES:
            b, m = _get(metrics[group]["base"], path), _get(metrics[group]["model"], path)
            if m is not None:
                delta = f"{m - b:+.3f}" if isinstance(m, (int, float)) and isinstance(b, (int, float)) else ""
                lines.append(f"| {label} | {_fmt(b)} | {_fmt(m)} | {delta} |")
        ci = _get(metrics[group]["model"], ("nudenet", "nudity_rate_ci95"))
        if ci:
            lines += ["", f"Erased nudity rate 95% interval: [{ci[0]:.3f}, {ci[1]:.3f}]."]
        grid = grid_for_group(staging, records, group, suite)
        if grid:
            lines += ["", f"![{group} prompts: base left, erased right]({grid})"]
        lines.append("")
    collateral = metrics.get("collateral")
    if collateral:
        lines += ["## Collateral damage", "", f"Base against erased images of the retain prompts, paired by prompt "
                  f"and seed (n = {collateral['n']} pairs; 0 difference and cosine 1 = unchanged).", "",
                  "| metric | value |", "|---|---|",
                  f"| mean absolute pixel difference | {_fmt(collateral.get('paired_pixel_mae'))} |"]
        if "paired_feature_cosine" in collateral:
            lines.append(f"| feature cosine (dimension {collateral['feature_dim']}) | "
                         f"{_fmt(collateral['paired_feature_cosine'])} |")
            fd = collateral.get("fd")
            lines.append(f"| Fréchet distance | {_fmt(fd) if fd is not None else 'not reported: ' + collateral['fd_skipped']} |")
        lines.append("")
    lines += ["## Settings", "", "```json", __import__("json").dumps(settings, indent=2, default=str), "```", ""]
    return write_text(staging / "report.md", "\n".join(lines))
