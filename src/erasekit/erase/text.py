"""The text-to-image concept: prompts, anchors, retain data, and the task built from them."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import check
from ..errors import ConfigError
from ..pipelines.adapters import adapter_for
from ..pipelines.generation import GenerationRecord, generate_to_folder
from ..pipelines.inference import place
from .tasks import ConditionTask

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class TextConceptConfig:
    """What a text-to-image model must forget, what it is remapped to, and what it must keep."""

    forget_prompts: list[str] = field(default_factory=list, metadata={"help": "prompts of the concept(s)"})
    anchor_prompts: list[str] = field(default_factory=list, metadata={"help": "prompts the concept is remapped to"})
    retain_prompts: list[str] = field(default_factory=list, metadata={"help": "prompts to keep; anchors if empty"})
    forget_images: str | None = field(default=None, metadata={"help": "folder of forget images; generated if null"})
    retain_images: str | None = field(default=None, metadata={"help": "folder of retain images; generated if null"})
    num_images_per_prompt: int = field(default=8, metadata={"help": "images generated per prompt"})
    generation_steps: int = field(default=30, metadata={"help": "sampler steps when generating data"})
    generation_guidance: float = field(default=7.5, metadata={"help": "CFG scale when generating data"})
    generation_batch_size: int = field(default=8, metadata={"help": "images per call when generating data"})
    resolution: int | None = field(default=None, metadata={"help": "training resolution; the model's default if null"})
    data_cache_dir: str | None = field(default=None, metadata={"help": "where generated data is cached"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for denoiser memory"})

    def __post_init__(self):
        check(self.num_images_per_prompt >= 1, "num_images_per_prompt", self.num_images_per_prompt, ">= 1")
        check(self.generation_steps >= 1, "generation_steps", self.generation_steps, ">= 1")
        check(self.generation_batch_size >= 1, "generation_batch_size", self.generation_batch_size, ">= 1")
        check(self.resolution is None or self.resolution % 8 == 0, "resolution", self.resolution, "a multiple of 8")
        for name in ("forget_images", "retain_images"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_dir():
                raise ConfigError(f"'{name}' is '{value}', which is not a directory; give a folder of images")

    def require_prompts(self) -> None:
        if not self.forget_prompts:
            raise ConfigError("'forget_prompts' is empty; a text-to-image model needs the prompt(s) to forget")
        if not self.anchor_prompts:
            raise ConfigError("'anchor_prompts' is empty; give the prompt(s) the concept is remapped to, "
                              "e.g. 'a photo of a person wearing clothes'")


def cache_root() -> Path:
    return Path(os.environ.get("ERASEKIT_CACHE", Path.home() / ".cache" / "erasekit"))


def _cache_dir(concept: TextConceptConfig, base_fingerprint: str, side: str, prompts, seed: int, dtype) -> Path:
    if concept.data_cache_dir:
        return Path(concept.data_cache_dir) / side
    key = json.dumps([base_fingerprint, prompts, seed, concept.num_images_per_prompt, concept.generation_steps,
                      concept.generation_guidance, concept.resolution, str(dtype)])
    return cache_root() / "data" / hashlib.sha256(key.encode()).hexdigest()[:16] / side


def folder_images(folder: str | os.PathLike, default_prompt: str | None) -> list[tuple[Path, str]]:
    """Images of a folder with their captions: `metadata.jsonl` ({"file_name", "text"}), else one prompt."""
    folder = Path(folder)
    meta = folder / "metadata.jsonl"
    if meta.is_file():
        pairs = []
        for line_no, line in enumerate(meta.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{meta}: line {line_no} is not JSON ({exc.msg}); each line must be "
                                  f'{{"file_name": "...", "text": "..."}}') from None
            name, text = (row.get("file_name"), row.get("text")) if isinstance(row, dict) else (None, None)
            if not isinstance(name, str) or not isinstance(text, str):
                raise ConfigError(f"{meta}: line {line_no} needs string 'file_name' and 'text' fields, got {row!r}")
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ConfigError(f"{meta}: line {line_no} names {name!r}, not a file inside {folder}")
            pairs.append((folder / name, text))
    else:
        if default_prompt is None:
            raise ConfigError(f"'{folder}' has no metadata.jsonl; add captions or give exactly one prompt for it")
        pairs = [(p, default_prompt) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    missing = [str(p) for p, _ in pairs if not p.is_file()]
    if missing or not pairs:
        raise ConfigError(f"'{folder}': " + (f"missing image {missing[0]}" if missing else "no images found"))
    return pairs


def generated_images(pipe, prompts, folder: Path, concept: TextConceptConfig, seed: int, resolution: int, dtype):
    records = [
        GenerationRecord(prompt=p, seed=seed + j * concept.num_images_per_prompt + i,
                         guidance=concept.generation_guidance, steps=concept.generation_steps,
                         path=f"{j:04d}/{i:05d}.png")
        for j, p in enumerate(prompts) for i in range(concept.num_images_per_prompt)
    ]
    pipe.set_progress_bar_config(disable=True)
    done = generate_to_folder(pipe, records, folder, concept.generation_batch_size, resolution, resolution,
                              dtype=dtype, desc=f"generate training images ({folder.name})")
    return [(folder / r["path"], r["prompt"]) for r in done]


def _load_images(paths, resolution: int) -> torch.Tensor:
    arrays = []
    for path in paths:
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB").resize((resolution, resolution), Image.BICUBIC)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ConfigError(f"image '{path}' cannot be read ({exc}); remove it from the folder or replace it") \
                from None
        arrays.append(np.asarray(image, dtype=np.float32) / 127.5 - 1)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def build_text_task(pipe, concept: TextConceptConfig, seed: int, device, dtype, base_fingerprint: str,
                    images: bool = True) -> ConditionTask:
    """Gather (or generate) forget and retain images, encode them and the prompts, build the task.

    With `images=False` (a method that edits from the prompts alone) no image is gathered or generated.
    """
    concept.require_prompts()
    adapter = adapter_for(pipe)
    for part in adapter.frozen_parts().values():  # frozen: only the denoiser is trained
        part.requires_grad_(False)
    resolution = concept.resolution or adapter.default_resolution()
    retain_prompts = concept.retain_prompts or concept.anchor_prompts
    place(pipe, device)
    sides = {}
    for side, prompts, folder in (("forget", concept.forget_prompts, concept.forget_images),
                                  ("retain", retain_prompts, concept.retain_images)):
        if not images:
            pairs = []
        elif folder:
            pairs = folder_images(folder, prompts[0] if len(prompts) == 1 else None)
        else:
            cache = _cache_dir(concept, base_fingerprint, side, prompts, seed, dtype)
            pairs = generated_images(pipe, prompts, cache, concept, seed + (0 if side == "forget" else 10**6),
                                     resolution, dtype)
        sides[side] = pairs
    table = [""] + sorted({*concept.forget_prompts, *concept.anchor_prompts, *retain_prompts,
                           *(p for pairs in sides.values() for _, p in pairs)})
    index = {p: i for i, p in enumerate(table)}
    adapter.truncated_prompts(table)
    conditions = adapter.encode_prompts(table, device, dtype, resolution)
    latents = {s: adapter.encode_images(_load_images([p for p, _ in pairs], resolution), device, dtype)
               if pairs else torch.empty(0) for s, pairs in sides.items()}
    ids = {s: torch.tensor([index[p] for _, p in pairs], dtype=torch.long) for s, pairs in sides.items()}
    prompt_ids = {"forget": [index[p] for p in concept.forget_prompts],
                  "anchor": [index[p] for p in concept.anchor_prompts], "retain": [index[p] for p in retain_prompts]}
    return ConditionTask(adapter, adapter.training_scheduler(), latents["forget"], ids["forget"], latents["retain"],
                         ids["retain"], anchors=prompt_ids["anchor"], null=0, table=conditions, prompt_ids=prompt_ids,
                         sample_shape=adapter.sample_shape(resolution), prompt_table=table)
