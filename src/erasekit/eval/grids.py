"""Image grids: one row per prompt (or class), one column per seed; base and erased side by side."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..errors import ConfigError
from ..pipelines.adapters import adapter_for
from ..pipelines.generation import generate_class_samples
from ..pipelines.inference import torch_dtype
from ..pipelines.loading import load_any_pipeline
from .measure import to_pil
from .suite import Sampling

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
HIGHLIGHT = (200, 30, 30)


def draw_rows(rows: Sequence[tuple[str, Sequence]], title: str, tile: int = 96,
              highlight: Sequence[str] = ()) -> Image.Image:
    """A captioned row per (name, images); images are PIL or (C, H, W) tensors in [-1, 1], enlarged
    with nearest-neighbour so pixels stay crisp. Rows named in `highlight` are outlined in red."""
    font = ImageFont.load_default()
    label_h, pad = 14, 2
    width = max([len(images) for _, images in rows] + [1]) * (tile + pad)
    canvas = Image.new("RGB", (max(width, 120), 16 + len(rows) * (tile + label_h + pad)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), title, fill=TEXT, font=font)
    for r, (name, images) in enumerate(rows):
        y = 16 + r * (tile + label_h + pad)
        colour = HIGHLIGHT if name in highlight else TEXT
        draw.text((2, y), name[:60], fill=colour, font=font)
        for c, image in enumerate(images):
            canvas.paste(to_pil(image).resize((tile, tile), Image.NEAREST), (c * (tile + pad), y + label_h))
        if name in highlight:
            draw.rectangle([0, y - 1, canvas.width - 1, y + label_h + tile], outline=HIGHLIGHT)
    return canvas


def side_by_side(panels: Sequence[Image.Image], gap: int = 16) -> Image.Image:
    """Panels placed left to right on a white canvas (e.g. base | erased)."""
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)), BACKGROUND)
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + gap
    return canvas


def class_grid(models: Sequence[tuple[str, str]], sampling: Sampling, columns: int = 10, forget: Sequence[int] = (),
               variant: str | None = None, dtype: str | None = None) -> Image.Image:
    """`erasekit grid`: each (name, model) a panel of `columns` samples per class on the same seeds, side by
    side, the `forget` classes outlined. Class-conditional models only."""
    panels = []
    for name, model in models:
        pipe = load_any_pipeline(model, variant=variant, torch_dtype=torch_dtype(dtype))
        adapter = adapter_for(pipe)
        if adapter.family != "class-conditional":
            raise ConfigError(f"'{model}' is a {type(pipe).__name__}; `erasekit grid` draws class-conditional "
                              f"models (for prompts, `erasekit eval --suite` writes grid.png)")
        s = dataclasses.replace(sampling, samples_per_class=max(2, columns)).for_family(adapter)
        classes = list(range(adapter.num_classes))
        images, labels = generate_class_samples(pipe, classes, s.samples_per_class, s.eval_seed,
                                                s.num_inference_steps, s.guidance_scale, s.eval_batch_size,
                                                desc=f"grid: generate {name}")
        rows = [(f"class {c}", list(images[labels == c][:columns])) for c in classes]
        panels.append(draw_rows(rows, name, tile=48, highlight=[f"class {c}" for c in forget]))
    return side_by_side(panels)
