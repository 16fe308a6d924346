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
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import ConfigError
from ..io import atomic_dir, atomic_file, check_output_free, fingerprint_state_dict, read_safetensors
from ..version import __version__
from .adapters import adapter_for
from .inference import DTYPES
from .layout import Source, content_fingerprint, copy_frozen, only_variant, stored_state, write_denoiser
from .loading import load_pipeline, source_of

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


def _state(module_or_state) -> dict[str, torch.Tensor]:
    return module_or_state if isinstance(module_or_state, dict) else module_or_state.state_dict()


def save_delta(path: str | os.PathLike, base_unet, erased_unet, masks=None, overwrite: bool = False,
               base_fingerprint: str | None = None, save_dtype: str | None = None,
               variant: str | None = None, base_content_fingerprint: str | None = None) -> dict[str, str]:
    """Write the delta and return its metadata (fingerprints of base and erased weights, sizes).

    `base_unet` and `erased_unet` are modules or state dicts, the erased one in the base's dtype;
    `save_dtype` records a cast that `apply` makes afterwards. `base_content_fingerprint` (of the base
    directory's files, `layout.content_fingerprint`) is checked by `apply` when it is given.
    """
    base, erased = _state(base_unet), _state(erased_unet)
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
        **({"base_content_fingerprint": base_content_fingerprint} if base_content_fingerprint else {}),
    }
    with atomic_file(path, overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return metadata


def apply_delta(unet, path: str | os.PathLike) -> dict[str, str]:
    """Write the delta's values into `unet` (a module or a state dict) in place, after checking it was
    made for these weights; returns the delta's metadata."""
    path = Path(path)
    tensors, metadata = read_safetensors(path, "delta file", DELTA_FORMAT)
    state = _state(unet)
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
    if fingerprint_state_dict(state) != metadata["erased_fingerprint"]:
        raise ConfigError(f"applying '{path}' did not reproduce the recorded erased weights; the file is damaged")
    return metadata


def _recorded(path: str | os.PathLike, key: str) -> str | None:
    """A metadata entry of the delta (the base's variant, its content fingerprint), if it has one."""

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get(key)
    except Exception:  # a missing or damaged file is reported by `apply_delta` with a clear message
        return None


def apply_delta_to_pipeline(base: str | os.PathLike, delta: str | os.PathLike, out: str | os.PathLike,
                            overwrite: bool = False, variant: str | None = None, revision: str | None = None,
                            allow_pickle: bool = False) -> Path:
    """`erasekit apply BASE DELTA OUT`: apply DELTA to the denoiser (UNet or transformer) of BASE as
    stored (the variant the erasure loaded, e.g. fp16, unless `variant` says otherwise) and write the
    pipeline to OUT with the base's layout: the other parts copied file for file, the denoiser in every
    file set the base has. A base directory whose files differ from the recorded content fingerprint
    is refused."""

    check_output_free(out, overwrite)
    variant = variant or _recorded(delta, "variant")
    pipe = load_pipeline(base, variant=variant, revision=revision, allow_pickle=allow_pickle,
                         torch_dtype=torch.float32)
    adapter = adapter_for(pipe)
    source = source_of(pipe)
    if source is None:  # a single checkpoint file: no layout to keep
        denoiser = adapter.denoiser
        metadata = apply_delta(denoiser, delta)
        if metadata.get("save_dtype"):
            denoiser.to(DTYPES[metadata["save_dtype"]])
        with atomic_dir(out, overwrite) as tmp:
            pipe.save_pretrained(tmp, variant=variant)
        return Path(out)
    source = Source(source.path, source.variant or only_variant(source.path))
    recorded = _recorded(delta, "base_content_fingerprint")
    if recorded and content_fingerprint(source.path, source.variant) != recorded:
        raise ConfigError(f"base '{base}' is not the model delta file '{delta}' was made from: its files' content "
                          f"fingerprint differs from the recorded {recorded} (erasure.json: base.content_fingerprint); "
                          f"pass the same base directory, Hub revision and --variant")
    state = stored_state(source, adapter.denoiser_name)
    metadata = apply_delta(state, delta)
    save_dtype = DTYPES[metadata["save_dtype"]] if metadata.get("save_dtype") else None
    with atomic_dir(out, overwrite) as tmp:
        if not write_denoiser(source, tmp, adapter.denoiser_name, state, save_dtype):
            denoiser = adapter.denoiser
            denoiser.load_state_dict(state)
            adapter.with_denoiser(denoiser.to(save_dtype or next(iter(state.values())).dtype)).save_pretrained(
                tmp, variant=variant)
        else:
            copy_frozen(source.path, tmp, adapter.denoiser_name)
    return Path(out)
