"""Before/after grids for text-to-image models: rows are prompts, columns are seeds."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..io import atomic_file
from ..pipelines.adapters import adapter_for
from .grids import BACKGROUND, TEXT, side_by_side

GRID_SEEDS = (0, 1, 2, 3)


def prompt_rows(pipe, prompts: list[str], seeds=GRID_SEEDS, steps: int = 30, guidance: float = 7.5,
                resolution: int | None = None, dtype=None) -> list[list[Image.Image]]:
    """One row of images per prompt, one column per seed (no safety checker, see `Adapter.generate`)."""
    adapter = adapter_for(pipe)
    return [adapter.generate([prompt] * len(seeds), seeds, steps, guidance, resolution, resolution, dtype)
            for prompt in prompts]


def draw_prompt_grid(rows: list[list[Image.Image]], prompts: list[str], title: str, tile: int = 96) -> Image.Image:
    font = ImageFont.load_default()
    label_h, pad = 14, 2
    width = max(len(r) for r in rows) * (tile + pad)
    canvas = Image.new("RGB", (width, 16 + len(rows) * (tile + label_h + pad)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), title, fill=TEXT, font=font)
    for r, (images, prompt) in enumerate(zip(rows, prompts)):
        y = 16 + r * (tile + label_h + pad)
        draw.text((2, y), prompt[:60], fill=TEXT, font=font)
        for c, image in enumerate(images):
            canvas.paste(image.convert("RGB").resize((tile, tile), Image.NEAREST), (c * (tile + pad), y + label_h))
    return canvas


def write_prompt_grid(base, erased, concept: dict, cfg, path: Path, device="cpu", dtype=None) -> Path:
    """Base | erased grid over the forget prompts and the retain prompts, same seeds on both sides."""
    prompts = list(concept["forget_prompts"]) + list(concept["retain_prompts"])[:4]
    resolution = cfg.concept.resolution
    panels = []
    for name, pipe in (("base", base), ("erased", erased)):
        pipe.set_progress_bar_config(disable=True)
        pipe.to(device)  # on the training device: 512 px grids on CPU would take minutes
        rows = prompt_rows(pipe, prompts, steps=cfg.concept.generation_steps,
                           guidance=cfg.concept.generation_guidance, resolution=resolution, dtype=dtype)
        pipe.to("cpu")
        panels.append(draw_prompt_grid(rows, prompts, name))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        side_by_side(panels).save(tmp, format="PNG")
    return path

