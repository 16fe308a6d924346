"""`trajectory`: a text-free probe (after Lu et al., NeurIPS 2025, "When are concepts erased").

A real concept image is noised to `level` of the schedule and denoised by the model with a
deterministic sampler (DDIM for DDPM-trained models, Euler for flow matching) under the instance's
prompt or label (`branch: label`) or the unconditional branch (`branch: null`). Success when the judge
still sees the concept: what img2img, inpainting or SDEdit with an unrelated prompt would give back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import DDIMScheduler

from ..config import check
from .common import Adversary, Context, Instance
from .registry import register_attack
from .victim import take


@dataclass
class TrajectoryConfig:
    """trajectory: a concept image noised to a level and denoised under the label or the null branch"""

    level: float = field(default=0.5, metadata={"help": "share of the schedule the image is noised to, in (0, 1)"})
    branch: str = field(default="label", metadata={"help": "label (the prompt or label) or null (unconditional)"})
    guidance_scale: float | None = field(default=None, metadata={
        "help": "CFG scale under the label; null: the model's sampling scale (the null branch uses none)"})
    steps: int = field(default=50, metadata={"help": "sampler steps over the whole schedule"})

    def __post_init__(self):
        check(0 < self.level < 1, "level", self.level, "in (0, 1)")
        check(self.branch in ("label", "null"), "branch", self.branch, "label or null")
        check(self.steps >= 2, "steps", self.steps, ">= 2")


def _guided(victim, z, t, cond, null, guidance):
    n = z.shape[0]
    rows = torch.zeros(n, dtype=torch.long, device=z.device)
    if guidance == 1.0:
        return victim.predict(z, t.expand(n), take(cond, rows))
    both = {k: torch.cat([take(cond, rows)[k], take(null, rows)[k]]) for k in cond}
    c, u = victim.predict(torch.cat([z, z]), t.expand(2 * n), both).chunk(2)
    return u + guidance * (c - u)


@torch.no_grad()
def denoise_from(victim, x0: torch.Tensor, level: float, cond, null, guidance: float, steps: int,
                 generator: torch.Generator) -> torch.Tensor:
    """`x0` (latents) noised to `level`, then denoised to a sample under `cond` (CFG against `null`)."""
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    if victim.flow_matching:
        sigmas = torch.linspace(level, 0.0, max(2, round(steps * level)) + 1)
        z = (1 - level) * x0 + level * noise
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            v = _guided(victim, z, (s * 1000).reshape(1).to(z.device), cond, null, guidance)
            z = z + (s_next - s) * v
        return z
    scheduler = DDIMScheduler.from_config(victim.pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    start = int(level * scheduler.config.num_train_timesteps)
    timesteps = [t for t in scheduler.timesteps if t <= start]
    z = scheduler.add_noise(x0, noise, timesteps[0].reshape(1))
    for t in timesteps:
        pred = _guided(victim, z, t.reshape(1).to(z.device), cond, null, guidance)
        z = scheduler.step(pred, t, z, use_clipped_model_output=True).prev_sample
    return z


class TrajectoryAttack:
    def __init__(self, config: TrajectoryConfig):
        self.config = config

    def run(self, victim, instance: Instance, context: Context) -> Adversary:
        config = self.config
        null_target = victim.null_label if not victim.has_text else ""
        cond = victim.conditions([instance.target if config.branch == "label" else null_target])
        null = victim.conditions([null_target])
        guidance = (config.guidance_scale or victim.guidance) if config.branch == "label" else 1.0
        x0 = victim.latents(instance.images)
        images = []
        for j, seed in enumerate(instance.eval_seeds):
            z = denoise_from(victim, x0[j % len(x0)][None], config.level, cond, null, guidance, config.steps,
                             torch.Generator().manual_seed(seed))
            images += victim.decode(z)
        return Adversary(instance.target if config.branch == "label" else null_target, images=images,
                         extra={"level": config.level, "branch": config.branch, "guidance": guidance})


register_attack("trajectory", TrajectoryConfig, TrajectoryAttack, threat_model="image")
