"""Generate images to a folder with a manifest.jsonl (prompt, seed, guidance, label, path); resumable.

Each record is written once: images already listed in the manifest (and present on disk) are
skipped, so an interrupted run continues where it stopped.
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


def read_manifest(folder: str | os.PathLike) -> list[dict]:
    """Records of the images that exist in `folder` (lines whose file is missing are ignored)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return []
    records = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if line_no == len(path.read_text().splitlines()):
                continue  # a line cut short by an interruption
            raise ValueError(f"{path}: line {line_no} is not JSON; delete the line or the folder") from None
        if (folder / record["path"]).is_file():
            records.append(record)
    return records


def _save_png(image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


@torch.no_grad()
def generate_to_folder(pipe, records: Sequence[GenerationRecord], folder: str | os.PathLike,
                       batch_size: int = 8, height: int | None = None, width: int | None = None) -> list[dict]:
    """Generate the missing records into `folder` and return all records of `records` found there.

    Images in one pipeline call share prompt, guidance and steps, so batching never changes them:
    each has its own generator.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = {r["path"] for r in read_manifest(folder)}
    todo = [r for r in records if r.path not in done]
    groups: dict[tuple, list[GenerationRecord]] = {}
    for record in todo:
        groups.setdefault((record.prompt, record.guidance, record.steps), []).append(record)
    with open(folder / MANIFEST, "a") as manifest:
        for (prompt, guidance, steps), group in groups.items():
            for start in range(0, len(group), batch_size):
                chunk = group[start : start + batch_size]
                generators = [torch.Generator().manual_seed(r.seed) for r in chunk]
                size = {"height": height, "width": width} if height else {}
                images = pipe(prompt=[prompt] * len(chunk), num_inference_steps=steps, guidance_scale=guidance,
                              generator=generators, **size).images
                for record, image in zip(chunk, images):
                    out = folder / record.path
                    out.parent.mkdir(parents=True, exist_ok=True)
                    _save_png(image, out)
                    manifest.write(json.dumps(asdict(record)) + "\n")
                    manifest.flush()
    wanted = {r.path for r in records}
    return [r for r in read_manifest(folder) if r["path"] in wanted]
