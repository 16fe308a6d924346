"""The model card (README.md) of an erased model, through huggingface_hub's `ModelCard`/`ModelCardData`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..version import __version__

# Licenses of the Stable Diffusion families, for bases whose directory has no model card (a converted
# checkpoint, say). SD 1.x (OpenAI CLIP text encoder, quick_gelu): CreativeML OpenRAIL-M; SD 2.x (OpenCLIP,
# gelu) and SDXL: CreativeML Open RAIL++-M. The bundled models are this project's, under Apache-2.0.
SD1_LICENSE, SD2_LICENSE = "creativeml-openrail-m", "openrail++"
RAIL_LICENSES = ("creativeml-openrail-m", "openrail++", "openrail")
METRIC_NAMES = {"UA": "unlearning accuracy", "RA": "retain accuracy", "FD": "Fréchet distance (judge features)",
                "noisy_rate": "noisy-sample rate",
                "mia_auc": "membership-inference AUC, forget vs held-out images"}


def base_license(base_dir: str | os.PathLike | None, base_pipe=None) -> tuple[str, str]:
    """The base's license and where it was read: its own model card, else its architecture, else "other"."""

    readme = Path(base_dir) / "README.md" if base_dir else None
    if readme is not None and readme.is_file():
        license_ = ModelCard.load(readme).data.license
        if license_:
            return str(license_), "the base model's card"
    if base_dir and Path(base_dir).resolve().parent.name == "bundled":
        return "apache-2.0", "erasekit's bundled model"
    family = _sd_family_license(base_pipe)
    if family:
        return family, "the Stable Diffusion family of the base (its directory has no card)"
    return "other", "unknown: the base has no model card"


def _sd_family_license(pipe) -> str | None:
    name = type(pipe).__name__
    if name.startswith("StableDiffusionXL"):
        return SD2_LICENSE
    if name.startswith("StableDiffusion3"):
        return None  # SD 3 and 3.5 come under Stability AI's own community licenses; read from the card
    encoder = getattr(pipe, "text_encoder", None)
    if not name.startswith("StableDiffusion") or encoder is None:
        return None
    return SD1_LICENSE if encoder.config.hidden_act == "quick_gelu" else SD2_LICENSE


def _is_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[\w][\w.-]*/[\w][\w.-]*", name)) and not os.path.exists(name)


def eval_results(record: dict[str, Any]) -> list:
    """The erased model's metrics as model-index results."""

    after = record.get("metrics", {}).get("after") or {}
    concept = record["concept"].get("name", "concept")
    task = "unconditional-image-generation" if "forget_prompts" not in record["concept"] else "text-to-image"
    out = [EvalResult(task_type=task, dataset_type="erasekit-generated", dataset_name=f"erasekit eval: {concept}",
                      metric_type=key, metric_value=float(after[key]), metric_name=METRIC_NAMES[key])
           for key in METRIC_NAMES if isinstance(after.get(key), (int, float))]
    for row in record.get("metrics", {}).get("attacks") or []:  # attack success rates on the erased model
        if row["role"] == "erased":
            out.append(EvalResult(task_type=task, dataset_type="erasekit-attack",
                                  dataset_name=f"erasekit attack: {concept}", metric_type=f"asr_{row['attack']}",
                                  metric_value=float(row["asr"]),
                                  metric_name=f"attack success rate, {row['attack']} ({row['threat_model']}; "
                                              f"pre-attack {row['pre_asr']:.2f}, n {row['n']})"))
    return out


def _body(record: dict[str, Any], license_: str, source: str, grid: str | None) -> list[str]:
    base, method = record["base_model"], record["method"]
    config = record["config"]
    train = config.get("train", config.get("run", {}))
    lines = [
        f"# {record['concept'].get('name') or 'Erased model'}: concept erased from `{base}`", "",
        f"This model is `{base}` with a concept erased by **{method}**: "
        f"{record.get('method_description') or 'a method registered with erasekit'}. Made with erasekit {__version__}.",
        "", "## Concept", "", "```json", json.dumps(record["concept"], indent=2), "```", "",
        "## Method and hyperparameters", "", "| setting | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in config["method"].items()],
        *[f"| {k} | {train[k]} |" for k in ("learning_rate", "max_steps", "seed", "mixed_precision") if k in train], "",
    ]
    rounds = config.get("adversarial", {})
    if rounds.get("adversarial_rounds"):
        lines += [f"Attack in the loop: {rounds['adversarial_rounds']} round(s) of `{rounds['adversarial_attack']}` "
                  f"({rounds['adversarial_steps']} steps each) against the model while it trained; "
                  f"{rounds['adversarial_share']:.0%} of each later forget batch was remapped under what they found "
                  "(`adversarial_conditions.safetensors`). Judge it with other attacks.", ""]
    if record.get("mask"):
        m = record["mask"]
        lines += [f"Mask: {m['selected']:,} of {m['total']:,} UNet weights ({m['selected'] / m['total']:.1%}).", ""]
    if record.get("safety_checker", {}).get("base"):
        lines += ["The base's safety checker is kept in this pipeline, unchanged. Erasure data and evaluation "
                  "images were generated without it, so the erasure was trained on and measured against what "
                  "it would hide.", ""]
    lines += ["## Metrics", "", "```json", json.dumps(record.get("metrics", {}), indent=2, default=str), "```", ""]
    if grid:
        lines += ["## Before and after", "", f"![before and after]({grid})", ""]
    lines += [
        "## Files", "",
        "- the pipeline (load with `diffusers` as usual);",
        "- `erasure.json`: how this model was made (base, concept, method, config, seed, versions, metrics);",
        "- `erasure_delta.safetensors`: only the changed weights; "
        "`erasekit apply BASE erasure_delta.safetensors OUT` rebuilds this model from the base, bit for bit.",
        "", "## License", "", f"`{license_}`, inherited from the base model (read from {source}).",
    ]
    if license_ in RAIL_LICENSES:
        lines += ["", "The base model's OpenRAIL license applies to this model as a derivative, including its "
                  "use-based restrictions: they pass on to anyone who uses or redistributes it, and a copy of the "
                  "license must go with every copy of the model."]
    return [*lines, ""]


def model_card(record: dict[str, Any], base_dir=None, grid: str | None = None, base_pipe=None) -> str:
    """The card's text: metadata (license, base model, tags, model-index results) and a body."""

    license_, source = base_license(base_dir, base_pipe)
    base = str(record["base_model"])
    results = eval_results(record)
    data = ModelCardData(
        license=license_, library_name="diffusers", base_model=base if _is_hub_id(base) else None,
        tags=["erasekit", "concept-erasure", record["method"]],
        model_name=f"{record['method']}-{record['concept'].get('name', 'erased')}" if results else None,
        eval_results=results or None,
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(_body(record, license_, source, grid))))
