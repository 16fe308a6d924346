"""The model card (README.md) of an erased model."""

from __future__ import annotations

import json
from typing import Any

from .. import __version__


def _license(base_dir) -> str:
    """The base model's license, read from its own card's front matter when there is one."""
    from pathlib import Path

    readme = Path(base_dir) / "README.md" if base_dir else None
    if readme and readme.is_file():
        text = readme.read_text(errors="replace")
        if text.startswith("---"):
            for line in text.split("---")[1].splitlines():
                if line.strip().startswith("license:"):
                    return line.split(":", 1)[1].strip()
    return "other"


def _is_hub_id(name: str) -> bool:
    import re

    return bool(re.fullmatch(r"[\w][\w.-]*/[\w][\w.-]*", name)) and not __import__("os").path.exists(name)


def model_card(record: dict[str, Any], base_dir=None, grid: str | None = None) -> str:
    """Front matter (license, tags, base model) and a body with concept, method, settings and metrics."""
    base = record["base_model"]
    license_ = _license(base_dir)
    concept = record["concept"]
    method = record["method"]
    settings = record["config"]["method"]
    lines = [
        "---",
        f"license: {license_}",
        *([f"base_model: {base}"] if _is_hub_id(str(base)) else []),
        "library_name: diffusers",
        "tags:",
        "- erasekit",
        "- concept-erasure",
        f"- {method}",
        "---",
        "",
        f"# {concept.get('name') or 'Erased model'}: concept erased from `{base}`",
        "",
        f"This model is `{base}` with a concept erased by **{method}** "
        f"(saliency-masked random-label remapping, Fan et al., ICLR 2024), made with erasekit {__version__}.",
        "",
        "## Concept",
        "",
        "```json",
        json.dumps(concept, indent=2),
        "```",
        "",
        "## Method and hyperparameters",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in settings.items()],
        *[f"| {k} | {record['config']['run'][k]} |" for k in ("learning_rate", "max_steps", "seed",
                                                               "mixed_precision")],
        "",
    ]
    if record.get("mask"):
        m = record["mask"]
        lines += [f"Mask: {m['selected']:,} of {m['total']:,} UNet weights ({m['selected'] / m['total']:.1%}).", ""]
    lines += ["## Metrics", "", "```json", json.dumps(record.get("metrics", {}), indent=2, default=str), "```", ""]
    if grid:
        lines += ["## Before and after", "", f"![before and after]({grid})", ""]
    lines += [
        "## Files",
        "",
        "- the pipeline (load with `diffusers` as usual);",
        "- `erasure.json`: how this model was made (base, concept, method, config, seed, versions, metrics);",
        "- `erasure_delta.safetensors`: only the changed weights; "
        "`erasekit apply BASE erasure_delta.safetensors OUT` rebuilds this model from the base, bit for bit.",
        "",
        f"License: inherited from the base model ({license_}).",
        "",
    ]
    return "\n".join(lines)
