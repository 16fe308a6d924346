"""Image grids: rows are classes (or prompts), columns are seeds; before and after side by side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
HIGHLIGHT = (200, 30, 30)


def _tile(image: torch.Tensor, scale: int) -> Image.Image:
    """(C, H, W) in [-1, 1] -> RGB PIL tile, enlarged with nearest-neighbour so pixels stay crisp."""
    array = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    tile = Image.fromarray(array, "RGB")
    return tile.resize((tile.width * scale, tile.height * scale), Image.NEAREST)


def image_grid(
    images: torch.Tensor, labels: torch.Tensor, row_names: Sequence[str], columns: int, scale: int = 3,
    title: str = "", highlight_rows: Sequence[int] = (),
) -> Image.Image:
    """One row per class (in label order), the first `columns` samples of each, with row captions."""
    font = ImageFont.load_default()
    tile_h, tile_w = images.shape[-2] * scale, images.shape[-1] * scale
    pad, left, top = 2, 28, 20 if title else 4
    canvas = Image.new("RGB", (left + columns * (tile_w + pad), top + len(row_names) * (tile_h + pad)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((left, 4), title, fill=TEXT, font=font)
    for row, name in enumerate(row_names):
        y = top + row * (tile_h + pad)
        colour = HIGHLIGHT if row in highlight_rows else TEXT
        draw.text((4, y + tile_h // 2 - 6), name, fill=colour, font=font)
        picks = (labels == row).nonzero().flatten()[:columns]
        for col, idx in enumerate(picks.tolist()):
            canvas.paste(_tile(images[idx], scale), (left + col * (tile_w + pad), y))
        if row in highlight_rows:
            draw.rectangle([left - 2, y - 1, canvas.width - 1, y + tile_h], outline=HIGHLIGHT)
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
