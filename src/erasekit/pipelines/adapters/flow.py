"""What flow-matching transformers (SD3, FLUX) share: rectified-flow noising and transformer scopes."""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from .base import Adapter, NoisyBatch

# Scope presets for MMDiT transformers. "xattn" is the text stream of the joint attention (its own
# q/k/v and output projections), the nearest thing these models have to a UNet's cross-attention.
TRANSFORMER_SCOPES = {
    "all": r".*",
    "xattn": r"\.attn\.(add_[qkv]_proj|to_add_out)\.",
    "no-xattn": r"^(?!.*\.attn\.(add_[qkv]_proj|to_add_out)\.).*",
    "attn": r"\.attn\.",
    "no-norm": r"^(?!.*norm).*",
}


class FlowMatchingAdapter(Adapter):
    """`z_t = (1 - s) x0 + s noise`, target `noise - x0` (the velocity these models predict), with
    `s` drawn uniformly from the training scheduler's sigmas (shifted as its config says)."""

    denoiser_name = "transformer"
    scopes = TRANSFORMER_SCOPES

    def training_scheduler(self):
        return FlowMatchEulerDiscreteScheduler.from_config(self.pipe.scheduler.config)

    def pure_noise(self, scheduler, n: int, shape, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn((n, *shape), generator=generator, dtype=torch.float32)
        return z, torch.full((n,), float(scheduler.sigmas.max()) * scheduler.config.num_train_timesteps)

    def noise_and_target(self, scheduler, x0: torch.Tensor, generator: torch.Generator,
                         levels: torch.Tensor | None = None) -> NoisyBatch:
        n = x0.shape[0]
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
        if levels is None:
            index = torch.randint(0, len(scheduler.sigmas), (n,), generator=generator)
        else:  # the sigmas run from pure noise down: level 0 is the cleanest
            index = (len(scheduler.sigmas) - 1 - (levels * len(scheduler.sigmas)).long()).clamp(
                0, len(scheduler.sigmas) - 1)
        sigma = scheduler.sigmas[index].to(x0.device, torch.float32).view(n, *([1] * (x0.dim() - 1)))
        z_t = ((1 - sigma) * x0.float() + sigma * noise.float()).to(x0.dtype)
        t = (sigma.flatten() * scheduler.config.num_train_timesteps).to(x0.device)
        return NoisyBatch(z_t, t, self.target_of(scheduler, x0, noise, t))

    def target_of(self, scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (noise.float() - x0.float()).to(x0.dtype)

    def noise_scales(self, scheduler, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = t.double() / scheduler.config.num_train_timesteps
        return 1 - sigma, sigma

    def noise_level(self, scheduler, t: torch.Tensor) -> torch.Tensor:
        """The share of the training sigmas below each sample's (the inverse of `levels` above)."""
        sigmas = scheduler.sigmas.to(t.device, torch.float64).flip(0)  # ascending
        return torch.searchsorted(sigmas, self.noise_scales(scheduler, t)[1]).double() / len(sigmas)
