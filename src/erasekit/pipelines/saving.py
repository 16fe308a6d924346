"""Writing an erased pipeline: the base's layout kept, the frozen parts copied, the delta, the base named.

A pipeline loaded from a directory (or a Hub snapshot) is written back with the same files: every
component the method did not change is copied byte for byte, and the denoiser is written in every file
set the base stores (`layout.write_denoiser`). A pipeline built in memory or from a single checkpoint
file has no files to copy and is saved with `save_pretrained`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..io import portable, write_text
from . import layout
from .adapters import adapter_for
from .card import model_card
from .delta import DELTA_FILE, save_delta
from .inference import DTYPES, dtype_name
from .loading import BUNDLED_PREFIX, source_of


def save_erased(staging: Path, base, base_state: dict[str, torch.Tensor], denoiser, mask, run,
                base_fingerprint: str) -> dict[str, Any]:
    """Write the erased pipeline and its delta into `staging`; returns the delta's metadata, plus the file
    sets written.

    Args:
        staging: the output directory being built.
        base: the loaded base pipeline.
        base_state: the base denoiser's weights as stored (the loaded file set, in its own dtype).
        denoiser: the erased denoiser (float32 master weights).
        mask: the method's `SaliencyMask`, or None.
        run: the `EraseConfig` (`save_dtype`, `variant`).
        base_fingerprint: fingerprint of `base_state`.
    """
    adapter = adapter_for(base)
    source = source_of(base)
    erased = {k: v.detach().cpu() for k, v in denoiser.state_dict().items()}
    as_stored = {k: v.to(base_state[k].dtype) if k in base_state else v for k, v in erased.items()}
    content = layout.content_fingerprint(source.path, source.variant) if source else None
    delta = save_delta(staging / DELTA_FILE, base_state, as_stored, mask.masks if mask is not None else None,
                       overwrite=True, base_fingerprint=base_fingerprint, save_dtype=run.save_dtype,
                       variant=source.variant if source else run.variant, base_content_fingerprint=content)
    save_dtype = DTYPES[run.save_dtype] if run.save_dtype else None
    if source and layout.write_denoiser(source, staging, adapter.denoiser_name, erased, save_dtype, base_state):
        layout.copy_frozen(source.path, staging, adapter.denoiser_name)
        sets = layout.file_sets(staging / adapter.denoiser_name)
        delta["file_sets"] = {str(v or "default"): dtype_name(layout.stored_dtype(staging, v, adapter.denoiser_name))
                              for v in sets}
        return delta
    # No files to copy: the pipeline is saved as loaded, the denoiser in the base's (or the asked) dtype.
    copy = type(denoiser).from_config(denoiser.config)
    copy.load_state_dict(as_stored)
    torch.nn.Module.to(copy, save_dtype or next(iter(base_state.values())).dtype)
    adapter.with_denoiser(copy).save_pretrained(staging, variant=run.variant)
    delta["file_sets"] = {str(run.variant or "default"): dtype_name(copy.dtype)}
    return delta


def base_name(given: str | os.PathLike) -> str:
    """How the erased model names its base: a Hub id or `bundled:NAME` as given, a directory in the
    Hugging Face cache by its repo id, any other directory by its folder name (never a path)."""
    given = str(given)
    if given.startswith(BUNDLED_PREFIX) or not os.path.exists(given):
        return given
    origin = layout.hub_origin(given)
    return origin[0] if origin else portable(given)


def describe_base(given: str | os.PathLike, source: layout.Source | None, content: str | None) -> dict[str, Any]:
    """The base as given (a path cut to its folder name), where it came from, and its content fingerprint
    (model_index.json and the weight files loaded), which `erasekit apply` checks."""
    given = str(given)
    if given.startswith(BUNDLED_PREFIX):
        kind = "bundled"
    elif os.path.exists(given):
        kind = "local"
    else:
        kind = "hub"
    out: dict[str, Any] = {"given": portable(given), "kind": kind, "name": base_name(given)}
    origin = layout.hub_origin(source.path) if source else None
    if origin:
        out["revision"] = origin[1]
    out["variant"] = source.variant if source else None
    out["content_fingerprint"] = content
    return out


def write_card(staging: Path, record: dict[str, Any], base) -> None:
    """README.md, the model card; the base's own card (its license) is read from the files it was loaded
    from, a Hub snapshot included."""
    source = source_of(base)
    grid = "report/grid.png" if (staging / "report" / "grid.png").is_file() else None
    write_text(staging / "README.md", model_card(record, source.path if source else None, grid, base))
