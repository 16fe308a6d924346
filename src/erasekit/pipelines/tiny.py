"""Tiny models built from configs under a fixed seed, for tests (in the manner of diffusers' dummy components)."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from .pipeline_class_conditional import ClassConditionalPipeline


def tiny_class_conditional_pipeline(
    num_classes: int = 10, sample_size: int = 16, seed: int = 0, prediction_type: str = "v_prediction"
) -> ClassConditionalPipeline:
    """A class-conditional pipeline of a few thousand parameters that runs in milliseconds on CPU."""
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=sample_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
        num_class_embeds=num_classes + 1,
    )
    train = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
    return ClassConditionalPipeline(unet=unet.eval(), scheduler=DDIMScheduler.from_config(train.config))
