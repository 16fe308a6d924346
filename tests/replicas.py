"""Tiny replicas of real Stable Diffusion checkpoints: their structure, not their size or weights.

A replica has every part and every setting that matters to loading, generating, training and saving
the real checkpoint: SD 1.4/1.5 (PNDM, safety checker and feature extractor, `requires_safety_checker`),
SD 2.1 (v-prediction, DDIM, no safety checker), SDXL base (two text encoders, a tokenizer padding with
"!", `force_zeros_for_empty_prompt`, a VAE with `force_upcast`), SD 3 medium (two CLIP encoders with
projections and T5, an MMDiT transformer, flow matching with shift 3, a 16-channel VAE with a shift
factor) and FLUX.1-dev (CLIP and T5, guidance embedding, packed latents, dynamic shifting). Each is written with
`save_pretrained` as the real repository stores it (`STORAGE`: the weights' dtype, an `fp16` variant,
the dtype the encoder configs declare, the legacy CLIP token ids, SDXL's stale scheduler keys), with a
model card carrying the real license, so tests load it from disk as users load the real one. `rigged_safety_checker=True` makes the SD 1.x safety checker
flag every image: a generation path that leaves it on then yields black images, which tests detect.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from erasekit.pipelines.tokenizer import build_clip_tokenizer
from tiny import tiny_clip_text_encoder, tiny_flux_pipeline, tiny_sd3_pipeline, tiny_vae

REPLICAS = {
    "sd14": "CompVis/stable-diffusion-v1-4",
    "sd15": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd21": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sd3": "stabilityai/stable-diffusion-3-medium-diffusers",
    "flux": "black-forest-labs/FLUX.1-dev",
}
LICENSES = {"sd14": "creativeml-openrail-m", "sd15": "creativeml-openrail-m", "sd21": "openrail++",
            "sdxl": "openrail++", "sd3": "other", "flux": "other"}
# The Hub's license_name of the "other" licenses.
LICENSE_NAMES = {"sd3": "stabilityai-ai-community", "flux": "flux-1-dev-non-commercial-license"}
SCHEDULER_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
FEATURE_SIZE = 32  # the real feature extractor crops to 224 for CLIP ViT-L/14; the tiny checker sees 32


def tiny_safety_checker(seed: int = 0, flag_everything: bool = False):
    """`StableDiffusionSafetyChecker` with a tiny CLIP vision tower; optionally rigged to flag every image."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                           image_size=FEATURE_SIZE, patch_size=8),
        projection_dim=16,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    if flag_everything:
        # A concept counts when cosine(image, concept) - weight > 0; cosines are >= -1, so -2 flags all.
        with torch.no_grad():
            checker.concept_embeds_weights.fill_(-2.0)
    return checker


def _feature_extractor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": FEATURE_SIZE}, crop_size={"height": FEATURE_SIZE,
                              "width": FEATURE_SIZE}, do_center_crop=True, do_resize=True)


def _unet(cross_attention_dim: int, sample_size: int, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=sample_size, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, norm_num_groups=4, **extra,
    ).eval()


def sd1_replica(seed: int = 0, rigged_safety_checker: bool = True):
    """SD 1.4/1.5: PNDM, quick_gelu CLIP text encoder, safety checker and feature extractor."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    scheduler = PNDMScheduler(**SCHEDULER_BETAS, set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
    return StableDiffusionPipeline(
        vae=tiny_vae(seed, 32, scaling_factor=0.18215), text_encoder=tiny_clip_text_encoder(16, None, seed, "quick_gelu"),
        tokenizer=build_clip_tokenizer(), unet=_unet(16, 16, attention_head_dim=4), scheduler=scheduler,
        safety_checker=tiny_safety_checker(seed, rigged_safety_checker), feature_extractor=_feature_extractor(),
        requires_safety_checker=True,
    )


def sd21_replica(seed: int = 0):
    """SD 2.1 (768 px): v-prediction with DDIM, gelu text encoder, "!" padding, no safety checker."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    scheduler = DDIMScheduler(**SCHEDULER_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              prediction_type="v_prediction")
    return StableDiffusionPipeline(
        vae=tiny_vae(seed, 32, scaling_factor=0.18215), text_encoder=tiny_clip_text_encoder(16, None, seed, "gelu"),
        tokenizer=build_clip_tokenizer(pad_token="!"),
        unet=_unet(16, 16, attention_head_dim=(2, 4), use_linear_projection=True), scheduler=scheduler,
        safety_checker=None, feature_extractor=_feature_extractor(), requires_safety_checker=False,
    )


def sdxl_replica(seed: int = 0):
    """SDXL base: two text encoders (the second with projection), text_time conditioning, fp16-unsafe VAE."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    torch.manual_seed(seed)
    scheduler = EulerDiscreteScheduler(**SCHEDULER_BETAS, interpolation_type="linear", timestep_spacing="leading",
                                       steps_offset=1, prediction_type="epsilon")
    unet = _unet(32, 16, attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
                 projection_class_embeddings_input_dim=8 * 6 + 16)
    return StableDiffusionXLPipeline(
        vae=tiny_vae(seed, 32, scaling_factor=0.13025, force_upcast=True),
        text_encoder=tiny_clip_text_encoder(16, None, seed, "quick_gelu"),
        text_encoder_2=tiny_clip_text_encoder(16, 16, seed + 1, "gelu"),
        tokenizer=build_clip_tokenizer(), tokenizer_2=build_clip_tokenizer(pad_token="!"), unet=unet,
        scheduler=scheduler, force_zeros_for_empty_prompt=True,
    )


def _model_card(kind: str) -> str:
    name = f"\nlicense_name: {LICENSE_NAMES[kind]}" if kind in LICENSE_NAMES else ""
    return (f"---\nlicense: {LICENSES[kind]}{name}\ntags:\n- stable-diffusion\n- text-to-image\n---\n\n"
            f"# Tiny replica of {REPLICAS[kind]}\n\nThe structure of the real checkpoint with tiny random "
            f"weights, built by erasekit for tests.\n")


# How each repository stores its weights: the dtype of the plain files, whether an fp16 variant sits beside
# them, and the dtype its text-encoder configs declare (transformers 5 loads a model in that dtype unless
# told otherwise). SDXL ships fp32 files plus fp16 ones, yet its encoder configs say float16.
STORAGE = {
    "sd14": dict(dtype=torch.float32, fp16_variant=True, encoder_dtype="float32"),
    "sd15": dict(dtype=torch.float32, fp16_variant=True, encoder_dtype="float32"),
    "sd21": dict(dtype=torch.float32, fp16_variant=True, encoder_dtype="float32"),
    "sdxl": dict(dtype=torch.float32, fp16_variant=True, encoder_dtype="float16"),
    "sd3": dict(dtype=torch.float16, fp16_variant=False, encoder_dtype="float16"),
    "flux": dict(dtype=torch.bfloat16, fp16_variant=False, encoder_dtype="bfloat16"),
}
# The published CLIP text configs (converted from OpenAI's and OpenCLIP's checkpoints) carry the legacy
# special-token ids; transformers then pools at the argmax token id, not at the first eos id.
LEGACY_CLIP_IDS = {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
# Keys SDXL's scheduler_config.json carries from the DDIM/PNDM configs it was copied from.
STALE_SCHEDULER_KEYS = {"sdxl": {"clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True}}


def _edit_json(path: Path, **values) -> None:
    import json

    data = json.loads(path.read_text())
    data.update(values)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _published_configs(kind: str, path: Path, encoder_dtype: str) -> None:
    """Rewrite the saved configs with what the real repository's files say."""
    import json

    for config in sorted(path.glob("text_encoder*/config.json")):
        data = json.loads(config.read_text())
        data.pop("dtype", None)  # the published files predate transformers 5's key
        data["torch_dtype"] = encoder_dtype
        if data.get("model_type", "").startswith("clip"):
            data.update(LEGACY_CLIP_IDS)
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if kind in STALE_SCHEDULER_KEYS:
        _edit_json(path / "scheduler" / "scheduler_config.json", **STALE_SCHEDULER_KEYS[kind])


def build_replica(kind: str, path: str | os.PathLike, rigged_safety_checker: bool = True,
                  fp16_variant: bool | None = None, seed: int = 0, dtype: torch.dtype | None = None) -> Path:
    """Write a replica of `kind` (one of `REPLICAS`) to `path` as its repository stores it (see `STORAGE`).

    Args:
        kind: sd14, sd15, sd21, sdxl, sd3 or flux.
        path: output directory.
        rigged_safety_checker: for SD 1.x, a safety checker that flags (blacks out) every image.
        fp16_variant: also write `*.fp16.safetensors` weights; None: as the real repository does.
        seed: seed of the random weights.
        dtype: dtype of the plain weight files; None: as the real repository stores them.
    """
    if kind not in REPLICAS:
        raise ValueError(f"unknown replica '{kind}'; choose one of {', '.join(REPLICAS)}")
    storage = STORAGE[kind]
    fp16_variant = storage["fp16_variant"] if fp16_variant is None else fp16_variant
    pipe = {"sd14": lambda: sd1_replica(seed, rigged_safety_checker),
            "sd15": lambda: sd1_replica(seed + 1, rigged_safety_checker),
            "sd21": lambda: sd21_replica(seed), "sdxl": lambda: sdxl_replica(seed),
            "sd3": lambda: tiny_sd3_pipeline(seed=seed), "flux": lambda: tiny_flux_pipeline(seed=seed)}[kind]()
    path = Path(path)
    if fp16_variant:
        import copy

        copy.deepcopy(pipe).to(torch.float16).save_pretrained(path, variant="fp16")
    pipe.to(dtype or storage["dtype"]).save_pretrained(path)
    _published_configs(kind, path, storage["encoder_dtype"])
    (path / "README.md").write_text(_model_card(kind))
    return path
