"""Tiny models built from configs under a fixed seed, for tests (in the manner of diffusers' dummy components)."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from erasekit.pipelines.pipeline_class_conditional import ClassConditionalPipeline


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
             force_upcast: bool = True, latent_channels: int = 4, shift_factor: float | None = None,
             quant_conv: bool = True):
    """A 2-block `AutoencoderKL` (latents at half the image size). SD3 and FLUX VAEs have 16 latent
    channels, a shift factor and no quant convs."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(8, 16), in_channels=in_channels, out_channels=in_channels,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=latent_channels,
        norm_num_groups=4, sample_size=sample_size, scaling_factor=scaling_factor, force_upcast=force_upcast,
        shift_factor=shift_factor, use_quant_conv=quant_conv, use_post_quant_conv=quant_conv,
    ).eval()


def tiny_t5_encoder(hidden: int, vocab_size: int, seed: int):
    """A 2-layer T5 encoder with gated-GELU feed-forwards, as T5 v1.1 (SD3's and FLUX's) has."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size, d_model=hidden, d_kv=8, d_ff=2 * hidden, num_layers=2, num_heads=2,
                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=8, pad_token_id=0,
                      eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(config).eval()


def tiny_sd_pipeline(prediction_type: str = "epsilon", sample_size: int = 32, seed: int = 0):
    """A Stable Diffusion 1.x (epsilon) or 2.x-style (v_prediction) pipeline of tiny parts.

    The tokenizer is the real CLIP tokenizer built offline; everything else is random.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from erasekit.pipelines.tokenizer import build_clip_tokenizer

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

    from erasekit.pipelines.tokenizer import build_clip_tokenizer

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


def tiny_sd3_pipeline(sample_size: int = 32, seed: int = 0):
    """A Stable Diffusion 3 pipeline of tiny parts: two CLIP encoders with projections, T5, an MMDiT
    transformer and a 16-channel VAE with a shift factor, sampled by flow matching."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    from erasekit.pipelines.tokenizer import build_clip_tokenizer, build_t5_tokenizer

    torch.manual_seed(seed)
    t5_tokenizer = build_t5_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=sample_size // 2, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
        pooled_projection_dim=32, pos_embed_max_size=sample_size,
    ).eval()
    vae = tiny_vae(seed, sample_size, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609,
                   force_upcast=True, quant_conv=False)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=tiny_clip_text_encoder(8, 16, seed), text_encoder_2=tiny_clip_text_encoder(8, 16, seed + 1),
        text_encoder_3=tiny_t5_encoder(16, len(t5_tokenizer), seed + 2), tokenizer=build_clip_tokenizer(),
        tokenizer_2=build_clip_tokenizer(pad_token="!"), tokenizer_3=t5_tokenizer,
    )


def tiny_flux_pipeline(sample_size: int = 32, seed: int = 0, guidance_embeds: bool = True):
    """A FLUX.1 pipeline of tiny parts: CLIP (pooled) and T5 (sequence) encoders, a transformer with
    double- and single-stream blocks and rotary positions, 2x2-packed 16-channel latents.

    `guidance_embeds` as FLUX.1-dev (True) or FLUX.1-schnell (False).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from erasekit.pipelines.tokenizer import build_clip_tokenizer, build_t5_tokenizer

    torch.manual_seed(seed)
    t5_tokenizer = build_t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=[4, 4, 8],
        guidance_embeds=guidance_embeds,
    ).eval()
    vae = tiny_vae(seed, sample_size, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
                   force_upcast=True, quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=tiny_clip_text_encoder(16, None, seed),
        text_encoder_2=tiny_t5_encoder(16, len(t5_tokenizer), seed + 2), tokenizer=build_clip_tokenizer(),
        tokenizer_2=t5_tokenizer,
    )
    return pipe
