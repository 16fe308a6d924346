"""Generation loops: prompt records to a folder with a manifest.jsonl (prompt, seed, guidance, label,
path), resumable and shardable; and class-conditional samples by (label, seed).

Each record is written once: images already listed in the manifest (and present on disk) are
skipped, so an interrupted run continues where it stopped. Each image's noise depends only on its seed.
Both erasure (its training data) and evaluation generate through here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class GenerationRecord:
    """One image to generate. `path` is relative to the output folder."""

    prompt: str
    seed: int
    guidance: float
    path: str
    label: str | None = None
    steps: int = 30
    group: str = "target"


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
                raise ValueError(f"{path}: line {line_no} is not JSON; delete the line or the folder") from None
            if (folder / record["path"]).is_file():
                records[record["path"]] = record
    return sorted(records.values(), key=lambda r: r["path"])


def _save_png(image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


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


def generate_to_folder(pipe, records: Sequence[GenerationRecord], folder: str | os.PathLike,
                       batch_size: int = 8, height: int | None = None, width: int | None = None,
                       rank: int = 0, world: int = 1, dtype: torch.dtype | None = None) -> list[dict]:
    """Generate the missing records into `folder` and return all records of `records` found there.

    With `world` processes, process `rank` takes every world-th batch and appends to its own
    `manifest-<rank>.jsonl`. Each image has its own generator, so its noise depends only on its seed.
    Images never pass a safety checker (see `Adapter.generate`); `dtype` autocasts float32 weights.
    """
    from .adapters import adapter_for

    adapter = adapter_for(pipe)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = {r["path"] for r in read_manifest(folder)}
    manifest_name = MANIFEST if world == 1 else f"manifest-{rank}.jsonl"
    with open(folder / manifest_name, "a") as manifest:
        for index, batch in enumerate(plan_batches(records, batch_size)):
            if index % world != rank or all(r.path in done for r in batch):
                continue
            images = adapter.generate([r.prompt for r in batch], [r.seed for r in batch], batch[0].steps,
                                      batch[0].guidance, height, width, dtype)
            for record, image in zip(batch, images):
                if record.path in done:
                    continue
                out = folder / record.path
                out.parent.mkdir(parents=True, exist_ok=True)
                _save_png(image, out)
                manifest.write(json.dumps(asdict(record)) + "\n")
                manifest.flush()
    wanted = {r.path for r in records}
    return [r for r in read_manifest(folder) if r["path"] in wanted]


def class_seeds(classes: Sequence[int], n: int, base_seed: int) -> tuple[torch.Tensor, list[int]]:
    """Labels and seeds of `n` samples per class: sample i of class c has seed `base_seed + c*n + i`."""
    labels = torch.tensor([c for c in classes for _ in range(n)])
    seeds = [base_seed + c * n + i for c in classes for i in range(n)]
    return labels, seeds


@torch.no_grad()
def generate_class_samples(pipe, labels: torch.Tensor, seeds: Sequence[int], steps: int, guidance: float,
                           batch_size: int) -> torch.Tensor:
    """Images in [-1, 1], one per (label, seed), from a class-conditional pipeline."""
    from .adapters import adapter_for

    adapter = adapter_for(pipe)
    chunks = []
    for start in range(0, len(seeds), batch_size):
        stop = start + batch_size
        out = adapter.generate_labels(labels[start:stop].tolist(), seeds[start:stop], steps, guidance)
        chunks.append(out.cpu() * 2 - 1)
    return torch.cat(chunks)
