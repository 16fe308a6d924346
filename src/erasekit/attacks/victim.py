"""The model under attack: one loaded pipeline, frozen, seen through its adapter.

It gives every attack the same four things, for every family: the latents of concept images, the
conditions of a prompt or label (differentiable through injected embeddings), the diffusion loss of the
adapter (epsilon, v or flow matching), and generation through the pipeline itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..pipelines.adapters import adapter_for
from ..pipelines.adapters.flow import FlowMatchingAdapter
from ..pipelines.loading import load_pipeline

CLASS_CONDITIONAL = "class-conditional"


def take(cond: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rows `rows` of every tensor of a condition table."""
    return {k: v[rows] for k, v in cond.items()}


class Victim:
    """A frozen pipeline (`role` erased, base or reference) with its adapter and sampling settings."""

    def __init__(self, pipe, role: str, source: str, steps: int | None = None, guidance: float | None = None,
                 device=None):
        self.pipe, self.role, self.source = pipe, role, source
        if device is not None:
            pipe.to(device)
        self.device = pipe.device
        self.adapter = adapter_for(pipe)
        pipe.set_progress_bar_config(disable=True)
        for part in pipe.components.values():
            if isinstance(part, torch.nn.Module):
                part.requires_grad_(False).eval()
        defaults = self.adapter.eval_defaults
        self.steps = steps or defaults["num_inference_steps"]
        self.guidance = guidance if guidance is not None else defaults["guidance_scale"]
        self.scheduler = self.adapter.training_scheduler()
        self.resolution = self.adapter.default_resolution()

    @classmethod
    def load(cls, source: str, role: str, steps=None, guidance=None, device="cpu") -> Victim:
        """Every component from `source`, in float32 on CPU, else in the denoiser's stored dtype."""
        return cls(load_pipeline(source, device=device), role, source, steps, guidance, device)

    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def has_text(self) -> bool:
        return self.family != CLASS_CONDITIONAL

    @property
    def flow_matching(self) -> bool:
        return isinstance(self.adapter, FlowMatchingAdapter)

    @property
    def denoiser(self):
        return self.adapter.denoiser

    @property
    def null_label(self) -> int:
        return self.adapter.null_label

    def image_channels(self) -> int:
        return int(self.denoiser.config.in_channels) if not self.has_text else 3

    # -- training signal ---------------------------------------------------------------------------
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] at the model's resolution to the denoiser's input space."""
        return self.adapter.encode_images(images, self.device, None).to(self.device)

    def conditions(self, targets: Sequence[str | int]) -> dict[str, torch.Tensor]:
        """One row per prompt (text models) or label (class-conditional), under the caller's grad mode."""
        if not self.has_text:
            return {"class_labels": torch.tensor([int(t) for t in targets], device=self.device)}
        cond = self.adapter.conditions([str(t) for t in targets], self.device, None, self.resolution)
        return {k: v.to(self.device) for k, v in cond.items()}

    def predict(self, z_t, t, cond) -> torch.Tensor:
        return self.adapter.predict(self.denoiser, z_t, t, cond)

    def noisy(self, x0: torch.Tensor, generator: torch.Generator, levels: torch.Tensor | None = None):
        return self.adapter.noise_and_target(self.scheduler, x0, generator, levels)

    def loss(self, cond, x0: torch.Tensor, generator: torch.Generator, levels=None) -> torch.Tensor:
        """The adapter's diffusion loss of `x0` under `cond` (one row, or one per sample)."""
        batch = self.noisy(x0, generator, levels)
        if next(iter(cond.values())).shape[0] == 1 and x0.shape[0] > 1:
            cond = take(cond, torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device))
        return F.mse_loss(self.predict(batch.z_t, batch.t, cond).float(), batch.target.float())

    def decode(self, latents: torch.Tensor) -> list:
        """Sampled latents to judge-ready images (as `generate` returns them)."""
        if not self.has_text:
            return list(latents.float().clamp(-1, 1).cpu().unbind(0))
        return self.adapter.decode_samples(latents, "pil")

    # -- generation --------------------------------------------------------------------------------
    def generate(self, target: str | int, seeds: Sequence[int], injection=None) -> list:
        """Images of `target` (a prompt or a label) on `seeds`, through the pipeline, with `injection`
        (TextSlots or LabelRow) active: PIL images for text models, (C, H, W) tensors in [-1, 1] else."""
        with injection.active() if injection is not None else contextlib.nullcontext():
            if not self.has_text:
                out = self.adapter.generate_labels([int(target)] * len(seeds), seeds, self.steps, self.guidance)
                return list((out.cpu() * 2 - 1).unbind(0))
            return self.adapter.generate([str(target)] * len(seeds), seeds, self.steps, self.guidance)
