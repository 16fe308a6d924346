"""The instances of an attack run: targets, their judge labels, concept images and disjoint seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError
from ..pipelines.digits import NUMBER_WORDS, load_digits_16
from .common import Instance
from .settings import AttackRun

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SELECT_OFFSET = 1_000_000


def concept_label(run: AttackRun, target: str | int) -> int | None:
    """The classifier's label of `target`: the run's, the label itself, or the digit a prompt names."""
    if run.concept_label is not None:
        return run.concept_label
    if isinstance(target, int):
        return target
    words = [w.strip(".,").lower() for w in target.split()]
    named = [NUMBER_WORDS.index(w) for w in words if w in NUMBER_WORDS]
    return named[-1] if named else None


def folder_images(folder: str, channels: int, size: int) -> torch.Tensor:
    """Every image of `folder` (sorted by name) as (N, channels, size, size) in [-1, 1]."""
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"'concept_images' {folder!r} is not a folder; pass a folder of concept images")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"'concept_images' {folder!r} holds no images ({', '.join(IMAGE_SUFFIXES)}); add some")
    out = []
    for file in files:
        image = Image.open(file).convert("L" if channels == 1 else "RGB").resize((size, size), Image.BICUBIC)
        array = np.asarray(image, np.float32)[..., None] if channels == 1 else np.asarray(image, np.float32)
        out.append(torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1)
    return torch.stack(out)


def digits_images(label: int, channels: int, size: int) -> torch.Tensor:
    """The bundled digits' held-out (test split) images of `label`, which no erase recipe trains on."""
    data = load_digits_16()
    images = data.test_images[data.test_labels == label]
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images.expand(-1, channels, -1, -1).contiguous()


def build_instances(run: AttackRun, channels: int, size: int, judge_metric: str) -> list[tuple[Instance, int | None]]:
    """(instance, judge label) pairs: instance i attacks target i mod T with its own images and seeds."""
    targets: list[str | int] = list(run.forget) if run.forget else list(run.forget_prompts)
    folder = folder_images(run.concept_images, channels, size) if run.concept_images else None
    pools = {}
    for target in targets:
        label = concept_label(run, target)
        if folder is not None:
            pools[target] = folder
        elif label is None or judge_metric != "classifier" or run.classifier != "bundled:digits-classifier":
            raise ConfigError(f"no concept images for {target!r}; pass --concept-images DIR (bundled images "
                              "exist only for digits judged by the bundled classifier)")
        else:
            pools[target] = digits_images(label, channels, size)
        if judge_metric == "classifier" and label is None:
            raise ConfigError(f"the classifier judge needs the concept's label for {target!r}; pass --concept-label")
    out = []
    for i in range(run.instances):
        target = targets[i % len(targets)]
        pool = pools[target]
        start = (i // len(targets)) * run.images_per_instance
        ids = tuple((start + j) % len(pool) for j in range(min(run.images_per_instance, len(pool))))
        instance = Instance(
            index=i, target=target, images=pool[list(ids)], image_ids=ids,
            eval_seeds=tuple(run.eval_seed + i * run.eval_images + j for j in range(run.eval_images)),
            select_seeds=tuple(run.eval_seed + SELECT_OFFSET + i * run.select_images + j
                               for j in range(run.select_images)),
            seed=run.seed * 1_000_003 + i)
        out.append((instance, concept_label(run, target)))
    return out
