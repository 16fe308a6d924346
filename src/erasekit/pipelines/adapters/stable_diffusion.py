"""Stable Diffusion 1.x/2.x (`UNet2DConditionModel` with CLIP text) and SDXL (two encoders, added conditions)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..inference import autocast
from .base import Adapter


class StableDiffusionAdapter(Adapter):
    """SD 1.x (epsilon) and 2.x (v-prediction): one CLIP text encoder, cross-attention conditioning."""

    def conditions(self, prompts: Sequence[str], device, dtype, resolution: int) -> dict[str, torch.Tensor]:
        with autocast(device, dtype, self.pipe.text_encoder.dtype):
            embeds, _ = self.pipe.encode_prompt(list(prompts), device=device, num_images_per_prompt=1,
                                                do_classifier_free_guidance=False)
        return {"encoder_hidden_states": embeds.float().cpu()}

    def predict(self, denoiser, z_t, t, cond):
        return denoiser(z_t, t, encoder_hidden_states=cond["encoder_hidden_states"].to(z_t.dtype)).sample


class StableDiffusionXLAdapter(Adapter):
    """SDXL: hidden states of two CLIP encoders, the second's pooled output and size/crop time ids."""

    def conditions(self, prompts: Sequence[str], device, dtype, resolution: int) -> dict[str, torch.Tensor]:
        with autocast(device, dtype, self.pipe.text_encoder.dtype):
            embeds, _, pooled, _ = self.pipe.encode_prompt(list(prompts), device=device, num_images_per_prompt=1,
                                                           do_classifier_free_guidance=False)
        if self.pipe.config.force_zeros_for_empty_prompt:  # SDXL's unconditional branch is all zeros
            empty = torch.tensor([p == "" for p in prompts], device=embeds.device)
            embeds = torch.where(empty[:, None, None], torch.zeros_like(embeds), embeds)
            pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
        time_ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], dtype=torch.float32)
        return {"encoder_hidden_states": embeds.float().cpu(), "text_embeds": pooled.float().cpu(),
                "time_ids": time_ids.expand(len(prompts), -1).clone()}

    def predict(self, denoiser, z_t, t, cond):
        dtype = z_t.dtype
        added = {"text_embeds": cond["text_embeds"].to(dtype), "time_ids": cond["time_ids"].to(dtype)}
        return denoiser(z_t, t, encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
                        added_cond_kwargs=added).sample
