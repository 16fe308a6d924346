"""Generation and latent coding that leave a pipeline's weights, dtypes and safety checker untouched.

Users erase and measure exactly what a safety checker hides, so erasekit never generates through one:
the pipeline is asked for latents (`output_type="latent"`, which skips the safety checker and the
watermark) and they are decoded here. Reduced precision comes from autocast, never from casting the
base's modules in place, so the frozen parts can be saved bit-identical, dtype included. A VAE with
`force_upcast` (SDXL's) runs in float32, as diffusers' own pipelines run it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    """`float16` for `torch.float16`: how records name a dtype."""
    return str(dtype).removeprefix("torch.")


def place(pipe, device) -> None:
    """Move a pipeline to `device`; a half-precision pipeline on CPU was warned about once, at loading."""
    pipe.to(device, silence_dtype_warnings=True)


def torch_dtype(name: str | None) -> torch.dtype | None:
    """`fp32`/`fp16`/`bf16` (or accelerate's `no`) as a torch dtype; None stays None."""
    if name in (None, "no"):
        return None if name is None else torch.float32
    return DTYPES[name]


def autocast(device: torch.device | str, dtype: torch.dtype | None, weights_dtype: torch.dtype = torch.float32):
    """Autocast float32 weights to `dtype` on `device`'s type; a no-op for None, float32, or weights that
    are already in reduced precision (an fp16 checkpoint runs in its own dtype)."""
    device_type = torch.device(device).type
    enabled = dtype is not None and dtype != torch.float32 and weights_dtype == torch.float32
    return torch.autocast(device_type, dtype=dtype if enabled else torch.bfloat16, enabled=enabled)


@contextlib.contextmanager
def vae_precision(vae) -> Iterator[None]:
    """Run a `force_upcast` VAE in float32 without autocast; a float16 copy in memory is upcast and cast
    back afterwards, which is exact (float16 -> float32 -> float16 loses nothing)."""
    if not getattr(vae.config, "force_upcast", False):
        yield
        return
    dtype = vae.dtype
    device_type = next(vae.parameters()).device.type
    # torch's own `Module.to`: diffusers' override warns about every cast, and this one is deliberate.
    try:
        if dtype != torch.float32:
            torch.nn.Module.to(vae, torch.float32)
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        if dtype != torch.float32:
            torch.nn.Module.to(vae, dtype)


def _vae_dtype(vae) -> torch.dtype:
    return torch.float32 if getattr(vae.config, "force_upcast", False) else vae.dtype


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, device, dtype: torch.dtype | None, batch_size: int = 8) -> torch.Tensor:
    """Images in [-1, 1] to scaled VAE posterior means, in float32 on CPU."""
    out = []
    with autocast(device, dtype, vae.dtype), vae_precision(vae):  # the inner one wins for force_upcast
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size].to(device, _vae_dtype(vae))
            out.append(vae.encode(chunk).latent_dist.mean.float().cpu())
    latents = torch.cat(out)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor, output_type: str = "pil"):
    """Scaled latents to images with the pipeline's VAE and image processor, as its own decode does."""
    vae = pipe.vae
    config = vae.config
    with vae_precision(vae):
        latents = latents.to(next(vae.parameters()).device, _vae_dtype(vae))
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
            std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
        images = vae.decode(latents).sample
    return pipe.image_processor.postprocess(images.float(), output_type=output_type)


def safety_checker_record(pipe) -> dict[str, Any]:
    """What the base's safety checker was, and that generation for data and evaluation did not use it."""
    checker = getattr(pipe, "safety_checker", None)
    return {"base": type(checker).__name__ if checker is not None else None,
            "used_for_generation": False,
            "note": "data and evaluation images are generated without it, so erasure is trained on and measured "
                    "against what it would hide; the saved pipeline keeps the base's safety checker unchanged"}
