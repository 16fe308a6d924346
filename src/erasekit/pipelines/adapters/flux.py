"""FLUX.1 (`FluxTransformer2DModel`): CLIP pooled + T5 sequence, 2x2-packed latents, flow matching."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..inference import autocast, decode_latents
from .flow import FlowMatchingAdapter

# The distilled-guidance value fed to guidance-embedding models (FLUX.1-dev) in training, as
# diffusers' FLUX training scripts default to; models without it (FLUX.1-schnell) take none.
TRAIN_GUIDANCE = 3.5


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): each 2x2 patch becomes one token."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w // 4, c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of `pack` for latents of height `h` and width `w`."""
    b, _, d = tokens.shape
    return tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device) -> torch.Tensor:
    """FLUX's positional ids of the packed tokens: (0, row, column)."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device)


class FluxAdapter(FlowMatchingAdapter):
    """Conditions: the T5 sequence and CLIP's pooled output. The task keeps latents unpacked, (B, C, H, W)."""

    def default_resolution(self) -> int:
        return int(self.pipe.default_sample_size) * int(self.pipe.vae_scale_factor)

    def conditions(self, prompts: Sequence[str], device, dtype, resolution: int) -> dict[str, torch.Tensor]:
        with autocast(device, dtype, self.pipe.text_encoder.dtype):
            embeds, pooled, _ = self.pipe.encode_prompt(list(prompts), None, device=device)
        return {"encoder_hidden_states": embeds.float().cpu(), "pooled_projections": pooled.float().cpu()}

    def predict(self, denoiser, z_t, t, cond):
        b, _, h, w = z_t.shape
        dtype = z_t.dtype
        text = cond["encoder_hidden_states"].to(dtype)
        guidance = torch.full((b,), TRAIN_GUIDANCE, device=z_t.device) if denoiser.config.guidance_embeds else None
        out = denoiser(hidden_states=pack(z_t), timestep=t.to(dtype) / 1000, guidance=guidance,
                       encoder_hidden_states=text, pooled_projections=cond["pooled_projections"].to(dtype),
                       img_ids=image_ids(h, w, z_t.device).to(dtype),
                       txt_ids=torch.zeros(text.shape[1], 3, device=z_t.device, dtype=dtype)).sample
        return unpack(out, h, w)

    def decode(self, latents: torch.Tensor, height: int, width: int, output_type: str = "pil"):
        scale = int(self.pipe.vae_scale_factor) * 2
        return decode_latents(self.pipe, unpack(latents, 2 * (height // scale), 2 * (width // scale)), output_type)
