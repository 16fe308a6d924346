"""Stable Diffusion 3 (`SD3Transformer2DModel`): two CLIP encoders and T5, joint attention, flow matching."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..inference import autocast
from .flow import FlowMatchingAdapter


class SD3Adapter(FlowMatchingAdapter):
    """Conditions: the joint CLIP+T5 sequence and the two CLIP encoders' pooled projections."""

    def conditions(self, prompts: Sequence[str], device, dtype, resolution: int) -> dict[str, torch.Tensor]:
        with autocast(device, dtype, self.pipe.text_encoder.dtype):
            embeds, _, pooled, _ = self.pipe.encode_prompt(list(prompts), None, None, device=device,
                                                           do_classifier_free_guidance=False)
        return {"encoder_hidden_states": embeds.float().cpu(), "pooled_projections": pooled.float().cpu()}

    def predict(self, denoiser, z_t, t, cond):
        dtype = z_t.dtype
        return denoiser(hidden_states=z_t, timestep=t, encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
                        pooled_projections=cond["pooled_projections"].to(dtype)).sample
