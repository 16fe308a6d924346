"""The erasure delta: only the changed entries of the UNet, as a bit-packed mask plus their values.

`erasure_delta.safetensors` holds, for every parameter with at least one changed entry,
`<name>.mask` (uint8, `numpy.packbits` of the flat bool "changed" mask) and `<name>.values`
(the erased values at those entries, in the parameter's dtype). Changed entries lie inside the
saliency mask, so the payload is at most (ratio + 1/32) of the UNet's fp32 bytes, plus the
safetensors header (names and shapes). `apply_delta(base_unet, delta)` rebuilds the erased UNet
bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .. import __version__
from ..errors import ConfigError
from ..io import atomic_file, fingerprint_state_dict, read_safetensors

DELTA_FORMAT = "erasekit-delta-v1"
DELTA_FILE = "erasure_delta.safetensors"


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.flatten().cpu().numpy().astype(np.uint8)))


def unpack_mask(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    numel = int(np.prod(shape)) if len(shape) else 1
    bits = np.unpackbits(packed.numpy(), count=numel).astype(bool)
    return torch.from_numpy(bits).view(shape)


def compute_delta(base: dict[str, torch.Tensor], erased: dict[str, torch.Tensor],
                  masks: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of the delta: the entries that differ from the base, checked against the mask if given."""
    tensors = {}
    for name, after in erased.items():
        changed = base[name] != after
        if masks is not None:
            outside = changed & ~masks[name].to(changed.device) if name in masks else changed
            if outside.any():
                raise ValueError(f"'{name}' changed outside the mask; the erased weights are not masked")
        if not changed.any():
            continue
        tensors[f"{name}.mask"] = pack_mask(changed)
        tensors[f"{name}.values"] = after[changed].contiguous().cpu()
    return tensors


def payload_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of the tensors themselves, without the safetensors header."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def save_delta(path: str | os.PathLike, base_unet, erased_unet, masks=None, overwrite: bool = False,
               base_fingerprint: str | None = None, save_dtype: str | None = None,
               variant: str | None = None) -> dict[str, str]:
    """Write the delta and return its metadata (fingerprints of base and erased weights, sizes).

    `erased_unet` is in the base's dtype; `save_dtype` records a cast that `apply` makes afterwards.
    """
    base, erased = base_unet.state_dict(), erased_unet.state_dict()
    tensors = compute_delta(base, erased, masks)
    metadata = {
        "format": DELTA_FORMAT,
        "erasekit_version": __version__,
        "base_fingerprint": base_fingerprint or fingerprint_state_dict(base),
        "erased_fingerprint": fingerprint_state_dict(erased),
        "changed_entries": str(sum(v.numel() for k, v in tensors.items() if k.endswith(".values"))),
        "payload_bytes": str(payload_bytes(tensors)),
        **({"save_dtype": save_dtype} if save_dtype else {}),
        **({"variant": variant} if variant else {}),
    }
    with atomic_file(path, overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return metadata


def apply_delta(unet, path: str | os.PathLike) -> dict[str, str]:
    """Write the delta's values into `unet` in place, after checking it was made for these weights;
    returns the delta's metadata."""
    path = Path(path)
    tensors, metadata = read_safetensors(path, "delta file", DELTA_FORMAT)
    state = unet.state_dict()
    if fingerprint_state_dict(state) != metadata["base_fingerprint"]:
        raise ConfigError(f"delta file '{path}' was made for other base weights "
                          f"(fingerprint {metadata['base_fingerprint']}); pass the base model it was made from")
    with torch.no_grad():
        for key in (k for k in tensors if k.endswith(".mask")):
            name = key[: -len(".mask")]
            if name not in state:
                raise ConfigError(f"delta file '{path}': '{name}' is not a weight of this UNet")
            target = state[name]
            values = tensors.get(f"{name}.values")
            if values is None:
                raise ConfigError(f"delta file '{path}' lacks the tensor '{name}.values' for its mask '{key}'; the "
                                  f"file is damaged: copy it again from the erasure's output folder")
            mask = unpack_mask(tensors[key], target.shape).to(target.device)
            if int(mask.sum()) != values.numel():
                raise ConfigError(f"delta file '{path}': '{name}' has {values.numel()} values for {int(mask.sum())} "
                                  f"masked weights; the file is damaged")
            target[mask] = values.to(target.device, target.dtype)
    if fingerprint_state_dict(unet.state_dict()) != metadata["erased_fingerprint"]:
        raise ConfigError(f"applying '{path}' did not reproduce the recorded erased weights; the file is damaged")
    return metadata


def _recorded_variant(path: str | os.PathLike) -> str | None:
    """The base weights variant (e.g. fp16) the delta was made against, if it names one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("variant")
    except Exception:  # a missing or damaged file is reported by `apply_delta` with a clear message
        return None


def apply_delta_to_pipeline(base: str | os.PathLike, delta: str | os.PathLike, out: str | os.PathLike,
                            overwrite: bool = False, variant: str | None = None) -> Path:
    """`erasekit apply BASE DELTA OUT`: load BASE (its `variant`, e.g. fp16, if the erasure used one),
    apply DELTA to its denoiser (UNet or transformer), save the pipeline to OUT."""
    from ..io import atomic_dir, check_output_free
    from .adapters import adapter_for
    from .inference import DTYPES
    from .loading import load_pipeline

    check_output_free(out, overwrite)
    variant = variant or _recorded_variant(delta)
    pipe = load_pipeline(base, variant=variant)
    denoiser = adapter_for(pipe).denoiser
    metadata = apply_delta(denoiser, delta)
    if metadata.get("save_dtype"):
        denoiser.to(DTYPES[metadata["save_dtype"]])
    with atomic_dir(out, overwrite) as tmp:
        pipe.save_pretrained(tmp, variant=variant)
    return Path(out)
