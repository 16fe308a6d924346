"""The adapter interface, with the DDPM (epsilon, v, sample) behaviour that UNet families share."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler

from ..inference import autocast, decode_latents, encode_images

logger = logging.getLogger("erasekit")

# Scope presets for UNets (diffusers module paths); transformer adapters define their own.
UNET_SCOPES = {
    "all": r".*",
    "xattn": r"attn2\.",
    "no-xattn": r"^(?!.*attn2\.).*",  # ESD-u: everything but the cross-attention
    "attn": r"(^|\.)attn[12]\.|(^|\.)attentions\.\d+\.to_",
    "no-norm": r"^(?!.*norm).*",
    "no-time": r"^(?!.*time_emb).*",  # all but the timestep embedding and each resnet's projection of it
}


@dataclass
class NoisyBatch:
    """`z_t`, the denoiser's timestep input `t`, and its regression target."""

    z_t: torch.Tensor
    t: torch.Tensor
    target: torch.Tensor


class Adapter:
    """One pipeline family: its denoiser, conditioning, noising, latents and how to rebuild it.

    Conditions are tables with one row per prompt (or class): `encode_prompts` builds them once with
    the frozen encoders, and `predict` takes the rows of a batch.
    """

    family = "text-to-image"
    denoiser_name = "unet"
    scopes: dict[str, str] = UNET_SCOPES
    image_suffix = ".png"  # how generated images are stored (see `generation.save_image`)
    # Evaluation settings that a suite leaves null: sampler steps, CFG scale, images per call, judges.
    eval_defaults = {"num_inference_steps": 30, "guidance_scale": 7.5, "eval_batch_size": 8, "metrics": ["clip"],
                     "grid_prompts": 6, "grid_seeds": 4}

    def __init__(self, pipe):
        self.pipe = pipe

    # -- the model ---------------------------------------------------------------------------------
    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_name)

    def truncated_prompts(self, prompts: Sequence[str]) -> list[str]:
        """Warn about, and return, the prompts longer than a tokenizer's limit: its encoder sees only the
        first `model_max_length` tokens (start and end tokens included), so the rest has no effect."""
        cut = []
        for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
            tokenizer = getattr(self.pipe, name, None)
            limit = getattr(tokenizer, "model_max_length", None)
            if tokenizer is None or not isinstance(limit, int) or limit > 10**6:
                continue
            for prompt in prompts:
                length = len(tokenizer(prompt).input_ids)
                if length > limit and prompt not in cut:
                    logger.warning(f"prompt {prompt!r} is {length} tokens; {name} keeps the first {limit}, so the "
                                   f"rest is cut. Shorten it if the cut words matter")
                    cut.append(prompt)
        return cut

    def frozen_parts(self) -> dict[str, torch.nn.Module]:
        """Every module of the pipeline but the denoiser: encoders, VAE, safety checker."""
        return {name: part for name, part in self.pipe.components.items()
                if isinstance(part, torch.nn.Module) and name != self.denoiser_name}

    def copy_denoiser(self, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
        """A float32 copy of the denoiser (the master weights of training, whatever the base's dtype), with
        the weights of `state` (the stored ones, so that loading in half precision loses nothing) or the
        loaded module's."""
        base = self.denoiser
        copy = type(base).from_config(base.config)
        copy.load_state_dict(state if state is not None else base.state_dict())
        return copy

    def with_denoiser(self, denoiser: torch.nn.Module):
        """The same pipeline with `denoiser`; every other part is the base's own object, unchanged."""
        pipe = type(self.pipe)(**{**self.pipe.components, self.denoiser_name: denoiser})
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def default_resolution(self) -> int:
        return int(self.denoiser.config.sample_size) * int(self.pipe.vae_scale_factor)

    def sample_shape(self, resolution: int | None = None) -> tuple[int, int, int]:
        """One training sample's shape (C, H, W) in the denoiser's input space: unpacked VAE latents."""
        size = (resolution or self.default_resolution()) // int(self.pipe.vae_scale_factor)
        return int(self.pipe.vae.config.latent_channels), size, size

    # -- noise -------------------------------------------------------------------------------------
    def training_scheduler(self):
        return DDPMScheduler.from_config(self.pipe.scheduler.config)

    def noise_and_target(self, scheduler, x0: torch.Tensor, generator: torch.Generator,
                         levels: torch.Tensor | None = None) -> NoisyBatch:
        """Draw `t ~ U{0..T-1}` and Gaussian noise from `generator`; the target follows the scheduler's
        `prediction_type`: epsilon, v_prediction or sample. `levels` (one value in [0, 1) per sample) fixes
        the timesteps instead, `t = floor(level * T)` (stratified estimates)."""
        n = x0.shape[0]
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
        steps = scheduler.config.num_train_timesteps
        if levels is None:
            t = torch.randint(0, steps, (n,), generator=generator).to(x0.device)
        else:
            t = (levels * steps).long().clamp(0, steps - 1).to(x0.device)
        z_t = scheduler.add_noise(x0, noise, t)
        return NoisyBatch(z_t, t, self.target_of(scheduler, x0, noise, t))

    def target_of(self, scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser regresses at `z_t = a_t x0 + s_t noise`, as the scheduler's `prediction_type` says."""
        kind = scheduler.config.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return scheduler.get_velocity(x0, noise, t)
        if kind == "sample":
            return x0
        raise ValueError(f"unsupported prediction_type {kind!r}")

    def noise_scales(self, scheduler, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(a_t, s_t)` with `z_t = a_t x0 + s_t noise`, one of each per sample, float64."""
        alphas = scheduler.alphas_cumprod.to(t.device, torch.float64)[t.long()]
        return alphas.sqrt(), (1 - alphas).sqrt()

    def noise_level(self, scheduler, t: torch.Tensor) -> torch.Tensor:
        """Where each sample's timestep lies in the schedule, in [0, 1): 0 is the clean end."""
        return t.double() / scheduler.config.num_train_timesteps

    def pure_noise(self, scheduler, n: int, shape, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` latents of `shape` where sampling starts, `z_T ~ N(0, I)`, with the first timestep `T - 1`."""
        z = torch.randn((n, *shape), generator=generator, dtype=torch.float32)
        return z, torch.full((n,), scheduler.config.num_train_timesteps - 1, dtype=torch.long)

    # -- conditions --------------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str], device, dtype, resolution: int) -> dict[str, torch.Tensor]:
        """One row per prompt of every conditioning tensor the denoiser takes, float32 on the host, built
        with the frozen encoders and no gradient."""
        with torch.no_grad():
            return self.conditions(prompts, device, dtype, resolution)

    def conditions(self, prompts: Sequence[str], device, dtype, resolution: int) -> dict[str, torch.Tensor]:
        """`encode_prompts` under the caller's gradient mode: attacks differentiate through the encoders
        (to embeddings injected at their input layers)."""
        raise NotImplementedError

    def predict(self, denoiser, z_t: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    # -- latents -----------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor, device, dtype) -> torch.Tensor:
        """Images in [-1, 1] to the denoiser's input space, float32 on the host."""
        return encode_images(self.pipe.vae, images, device, dtype)

    def decode(self, latents: torch.Tensor, height: int, width: int, output_type: str = "pil"):
        """The pipeline's `output_type="latent"` output (packed, for FLUX) to images."""
        return decode_latents(self.pipe, latents, output_type)

    def decode_samples(self, latents: torch.Tensor, output_type: str = "pil"):
        """Latents in the task's space (B, C, H, W), as training and the samplers here see them, to images."""
        return decode_latents(self.pipe, latents, output_type)

    def generate_records(self, records, height: int | None = None, width: int | None = None,
                         dtype: torch.dtype | None = None) -> list:
        """One planned batch of `GenerationRecord`s (sharing steps and guidance) to images."""
        return self.generate([r.prompt for r in records], [r.seed for r in records], records[0].steps,
                             records[0].guidance, height, width, dtype)

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], steps: int, guidance: float,
                 height: int | None = None, width: int | None = None, dtype: torch.dtype | None = None,
                 output_type: str = "pil"):
        """One batch of images, one prompt and seed each, with no safety checker and no watermark.

        Each image has its own generator, so its noise depends only on its seed.
        """
        height = height or self.default_resolution()
        width = width or self.default_resolution()
        with torch.no_grad(), autocast(self.pipe.device, dtype, self.pipe.dtype):
            latents = self.pipe(prompt=list(prompts), num_inference_steps=steps, guidance_scale=guidance,
                                generator=[torch.Generator().manual_seed(int(s)) for s in seeds],
                                output_type="latent", height=height, width=width).images
        return self.decode(latents, height, width, output_type)
