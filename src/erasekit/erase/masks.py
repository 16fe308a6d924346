"""Save and load saliency masks as safetensors of bool tensors with metadata."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import ConfigError
from ..io import atomic_file, fingerprint_state_dict, read_safetensors
from ..version import __version__
from .saliency import SaliencyMask

MASK_FORMAT = "erasekit-mask-v1"


def _file_fields(mask: SaliencyMask, concept: str, base_fingerprint: str | None) -> dict[str, str]:
    """What `save_mask` writes beside the method's own metadata."""
    fields = {"format": MASK_FORMAT, "ratio": repr(mask.ratio), "scope": mask.scope, "concept": concept,
              "selected": str(mask.selected), "total": str(mask.total), "erasekit_version": __version__}
    return {**fields, "base_fingerprint": base_fingerprint} if base_fingerprint else fields


# The keys of a mask file that are not the method's: `erasure.json` records the method's metadata without them.
MASK_FILE_KEYS = tuple(_file_fields(SaliencyMask({}, 0.0, ""), "", "-"))


def save_mask(mask: SaliencyMask, path: str | os.PathLike, unet=None, concept: str = "", overwrite: bool = False,
              base_fingerprint: str | None = None):
    """Write bool masks plus metadata (ratio, concept, scope, base fingerprint, counts).

    The fingerprint is `base_fingerprint` if given, else computed from `unet`.
    """
    if not base_fingerprint and unet is not None:
        base_fingerprint = fingerprint_state_dict(unet.state_dict())
    metadata = {**mask.metadata, **_file_fields(mask, concept, base_fingerprint)}
    tensors = {name: m.to("cpu", torch.bool).contiguous() for name, m in mask.masks.items()}
    with atomic_file(path, overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    mask.metadata = metadata
    return Path(path)


def load_mask(path: str | os.PathLike, unet=None) -> SaliencyMask:
    """Read a mask and check it against `unet`: names, shapes, dtype and, if recorded, the base fingerprint."""
    path = Path(path)
    masks, metadata = read_safetensors(path, "mask file", MASK_FORMAT,
                                       "fix 'mask_path' or drop it to compute a mask")
    for name, m in masks.items():
        if m.dtype != torch.bool:
            raise ConfigError(f"mask file '{path}': tensor '{name}' is {m.dtype}, expected torch.bool")
    if unet is not None:
        params = dict(unet.named_parameters())
        for name, m in masks.items():
            if name not in params:
                raise ConfigError(f"mask file '{path}': '{name}' is not a parameter of this UNet; wrong base model?")
            if tuple(m.shape) != tuple(params[name].shape):
                raise ConfigError(
                    f"mask file '{path}': '{name}' has shape {tuple(m.shape)}, the UNet has {tuple(params[name].shape)}"
                )
        recorded = metadata.get("base_fingerprint")
        if recorded and recorded != fingerprint_state_dict(unet.state_dict()):
            raise ConfigError(
                f"mask file '{path}' was computed on other base weights (fingerprint {recorded}); "
                f"recompute the mask for this model"
            )
    return SaliencyMask(masks=masks, ratio=float(metadata.get("ratio", "nan")), scope=metadata.get("scope", ""),
                        metadata=metadata)
