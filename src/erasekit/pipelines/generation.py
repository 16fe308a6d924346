"""The one generation loop: records (a prompt or a class label, and a seed) to images, in memory or
to a folder with a manifest.jsonl, resumable and shardable.

One seed scheme: each image has its own generator, seeded by its record's seed, so an image depends
only on its record (and on the batch it is planned into, which is fixed, see `plan_batches`).
Each record is written once: images already listed in the manifest (and present on disk) are
skipped, so an interrupted run continues where it stopped. Erasure (its training data), evaluation
and the grids all generate through here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError
from ..progress import Progress
from .adapters import adapter_for

MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class GenerationRecord:
    """One image to generate: from `prompt`, or from `class_id` for class-conditional models.

    `path` is relative to the output folder; its suffix is the adapter's `image_suffix`.
    """

    prompt: str
    seed: int
    guidance: float
    path: str
    label: str | None = None
    steps: int = 30
    group: str = "target"
    class_id: int | None = None


def class_records(classes: Sequence[int], n: int, base_seed: int, steps: int, guidance: float,
                  forget: Sequence[int] = (), suffix: str = ".npy") -> list[GenerationRecord]:
    """`n` samples per class, in class order: sample i of class c has seed `base_seed + c*n + i`.

    Forget classes form the "target" group and the others "retain".
    """
    return [GenerationRecord(prompt="", seed=base_seed + c * n + i, guidance=guidance, steps=steps,
                             group=group, label=str(c), class_id=c, path=f"{group}/{c:03d}-{i:05d}{suffix}")
            for c in classes for group in ["target" if c in set(forget) else "retain"] for i in range(n)]


def read_manifest(folder: str | os.PathLike) -> list[dict]:
    """Records of the images that exist in `folder`, from `manifest.jsonl` and the per-process
    `manifest-<rank>.jsonl` files of a sharded run (lines whose file is missing are ignored)."""
    folder = Path(folder)
    records = {}
    for path in sorted(folder.glob("manifest*.jsonl")):
        lines = path.read_text().splitlines()
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if line_no == len(lines):
                    continue  # a line cut short by an interruption
                raise ConfigError(f"{path}: line {line_no} is not JSON; delete the line or the folder") from None
            where = record.get("path") if isinstance(record, dict) else None
            if not isinstance(where, str) or Path(where).is_absolute() or ".." in Path(where).parts:
                raise ConfigError(f"{path}: line {line_no} names {where!r}, not a path inside {folder}; delete the "
                                  f"line or the folder")
            if (folder / where).is_file():
                records[where] = record
    return sorted(records.values(), key=lambda r: r["path"])


def save_image(image, path: Path) -> None:
    """A PIL image as PNG; a float tensor (C, H, W) in [-1, 1] as float32 `.npy`, exactly as generated."""
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(image, torch.Tensor):
        with open(tmp, "wb") as f:
            np.save(f, image.detach().float().cpu().numpy(), allow_pickle=False)
    else:
        image.save(tmp, format="PNG")
    os.replace(tmp, path)


def load_image(path: Path):
    """What `save_image` wrote: a float tensor for `.npy`, an RGB PIL image otherwise."""
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False))

    with Image.open(path) as image:
        return image.convert("RGB")


def plan_batches(records: Sequence[GenerationRecord], batch_size: int) -> list[list[GenerationRecord]]:
    """Batches of records sharing guidance and steps (prompts may differ), in a fixed order.

    An I2P-style CSV has one image per prompt, so batching across prompts is what fills a batch.
    Batches are planned over all records before any sharding, so an image is always generated in the
    same batch, whatever the number of processes: batched UNet numerics then match bit for bit.
    """
    groups: dict[tuple, list[GenerationRecord]] = {}
    for record in records:
        groups.setdefault((record.guidance, record.steps), []).append(record)
    return [group[i : i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]


def generate_records(pipe, records: Sequence[GenerationRecord], batch_size: int, height: int | None = None,
                     width: int | None = None, dtype: torch.dtype | None = None, rank: int = 0, world: int = 1,
                     skip: frozenset[str] = frozenset(), desc: str = "generate"):
    """Yield (record, image) for this process's share of the planned batches, skipping `skip` paths, with
    progress (`desc`) on the main process.

    With `world` processes, process `rank` takes every world-th batch. Images never pass a safety
    checker (see `Adapter.generate`); `dtype` autocasts float32 weights.
    """

    adapter = adapter_for(pipe)
    mine = [batch for index, batch in enumerate(plan_batches(records, batch_size))
            if index % world == rank and not all(r.path in skip for r in batch)]
    with Progress(sum(len(b) for b in mine), desc, unit="image", enabled=rank == 0) as progress:
        for batch in mine:
            images = adapter.generate_records(batch, height, width, dtype)
            progress.update(len(batch))
            for record, image in zip(batch, images):
                if record.path not in skip:
                    yield record, image


IMAGE_DEFINING = ("prompt", "seed", "guidance", "steps", "class_id")


def _check_same_images(folder: Path, records: Sequence[GenerationRecord], existing: dict[str, dict]) -> None:
    """An image already in `folder` under a wanted path must have been made from the same prompt, seed and
    settings: a cache or an interrupted run for something else is never reused silently."""
    for record in records:
        old = existing.get(record.path)
        if old is None:
            continue
        new = asdict(record)
        differs = [k for k in IMAGE_DEFINING if old.get(k) != new[k]]
        if differs:
            key = differs[0]
            raise ConfigError(
                f"'{folder}' already holds '{record.path}', made with {key} {old.get(key)!r} where this run wants "
                f"{new[key]!r}: it is a data cache or an interrupted run for another concept or other settings. "
                f"Delete that folder, or choose another one (data_cache_dir, --output)")


def _drop_partial_line(path: Path) -> None:
    """Cut a last line that an interruption left without its newline, so that appended lines stay whole."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        os.truncate(path, data.rfind(b"\n") + 1)


def generate_to_folder(pipe, records: Sequence[GenerationRecord], folder: str | os.PathLike,
                       batch_size: int = 8, height: int | None = None, width: int | None = None,
                       rank: int = 0, world: int = 1, dtype: torch.dtype | None = None,
                       desc: str = "generate") -> list[dict]:
    """Generate the missing records into `folder` and return all records of `records` found there.

    Process `rank` of `world` appends to its own `manifest-<rank>.jsonl` (`manifest.jsonl` alone).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    existing = {r["path"]: r for r in read_manifest(folder)}
    _check_same_images(folder, records, existing)
    done = frozenset(existing)
    manifest_name = MANIFEST if world == 1 else f"manifest-{rank}.jsonl"
    _drop_partial_line(folder / manifest_name)
    with open(folder / manifest_name, "a") as manifest:
        for record, image in generate_records(pipe, records, batch_size, height, width, dtype, rank, world, done,
                                              desc):
            out = folder / record.path
            out.parent.mkdir(parents=True, exist_ok=True)
            save_image(image, out)
            manifest.write(json.dumps(asdict(record)) + "\n")
            manifest.flush()
    wanted = {r.path for r in records}
    return [r for r in read_manifest(folder) if r["path"] in wanted]


@torch.no_grad()
def generate_class_samples(pipe, classes: Sequence[int], n: int, base_seed: int, steps: int, guidance: float,
                           batch_size: int, desc: str = "generate") -> tuple[torch.Tensor, torch.Tensor]:
    """In memory: images in [-1, 1] of `n` samples per class (seeds as `class_records`) and their labels."""
    records = class_records(classes, n, base_seed, steps, guidance)
    images = [image for _, image in generate_records(pipe, records, batch_size, desc=desc)]
    return torch.stack(images), torch.tensor([r.class_id for r in records])
