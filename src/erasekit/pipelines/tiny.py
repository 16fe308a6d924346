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


def tiny_clip_text_encoder(hidden: int, projection: int | None, seed: int, hidden_act: str = "gelu"):
    """A 2-layer CLIP text encoder (with a projection head when `projection` is set)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, vocab_size=49408, hidden_size=hidden,
        intermediate_size=2 * hidden, num_attention_heads=2, num_hidden_layers=2, max_position_embeddings=77,
        projection_dim=projection or hidden, hidden_act=hidden_act,
    )
    model = CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)
    return model.eval()


def tiny_vae(seed: int, sample_size: int, in_channels: int = 3, scaling_factor: float = 0.18215,
             force_upcast: bool = True):
    """A 2-block `AutoencoderKL` (latents at half the image size, 4 channels)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(8, 16), in_channels=in_channels, out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4, norm_num_groups=4,
        sample_size=sample_size, scaling_factor=scaling_factor, force_upcast=force_upcast,
    ).eval()


def tiny_sd_pipeline(prediction_type: str = "epsilon", sample_size: int = 32, seed: int = 0):
    """A Stable Diffusion 1.x (epsilon) or 2.x-style (v_prediction) pipeline of tiny parts.

    The tokenizer is the real CLIP tokenizer built offline; everything else is random.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from .tokenizer import build_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=sample_size // 2, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16, norm_num_groups=4,
        attention_head_dim=4,
    ).eval()
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              prediction_type=prediction_type)
    return StableDiffusionPipeline(
        unet=unet, scheduler=scheduler, vae=tiny_vae(seed, sample_size), text_encoder=tiny_clip_text_encoder(16, None, seed),
        tokenizer=build_clip_tokenizer(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline(sample_size: int = 32, seed: int = 0):
    """An SDXL pipeline of tiny parts: two text encoders, added time/text conditioning."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    from .tokenizer import build_clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=sample_size // 2, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=8 * 6 + 16, cross_attention_dim=32, norm_num_groups=4,
    ).eval()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    tokenizer = build_clip_tokenizer()
    return StableDiffusionXLPipeline(
        unet=unet, scheduler=scheduler, vae=tiny_vae(seed, sample_size),
        text_encoder=tiny_clip_text_encoder(16, None, seed), text_encoder_2=tiny_clip_text_encoder(16, 16, seed + 1),
        tokenizer=tokenizer, tokenizer_2=tokenizer, force_zeros_for_empty_prompt=True,
    )
