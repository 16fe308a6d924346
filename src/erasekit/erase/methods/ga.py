"""Gradient ascent on the forget loss with a retain term: the standard unlearning baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..objectives import diffusion_loss
from ..registry import register_method
from ..tasks import Sampler
from .shared import RetainSettings, ScopedMethod


@dataclass
class GAConfig(RetainSettings):
    """Gradient ascent on the forget diffusion loss plus `alpha` times the retain loss (a standard baseline)."""


class GAMethod(ScopedMethod):
    """`-L_forget + alpha L_retain`: the forget loss is unbounded above, so the step count is the brake."""

    config: GAConfig

    def compute_loss(self, denoiser, sampler: Sampler) -> tuple[torch.Tensor, dict[str, Any]]:
        forget = sampler.forget(self.config.batch_size)
        forget_loss = diffusion_loss(lambda z, t, c: sampler.task.predict(denoiser, z, t, c), sampler.noisy(forget.x0),
                                     forget.cond)
        retain_loss = self.retain_loss(denoiser, sampler)
        loss = -forget_loss + self.config.alpha * retain_loss
        return loss, {"loss": loss.item(), "forget_loss": forget_loss.item(), "retain_loss": retain_loss.item()}


register_method("ga", config_cls=GAConfig, method_cls=GAMethod,
                description="gradient ascent on the forget loss with a retain term (a standard baseline)")
