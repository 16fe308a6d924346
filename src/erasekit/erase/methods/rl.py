"""Random-label remapping (Fan et al., ICLR 2024): SalUn's objective on every weight in scope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ...config import check
from ..objectives import remap_loss
from ..registry import register_method
from ..tasks import Sampler
from .shared import NullBranchSettings, RetainSettings, ScopedMethod

RETAIN_TARGETS = ("noise", "teacher")


@dataclass
class RLConfig(RetainSettings, NullBranchSettings):
    """Random-label remapping on all weights in scope (SalUn's ablation without a mask)."""

    target_label: int | None = field(default=None, metadata={"help": "fixed remap class (overrides remap)"})
    remap: str = field(default="random", metadata={
        "help": "remap target: random (a kept class or anchor prompt per sample, as SalUn) or farthest (the one kept "
                "class, or anchor prompt, whose mean training image is farthest from the forget concept's)"})
    retain_target: str = field(default="noise", metadata={
        "help": "target of the retain loss: noise (the ordinary diffusion loss, as SalUn) or teacher (the frozen "
                "base's prediction on the same noisy retain batch, which is zero-gradient at the base)"})

    def __post_init__(self):
        super().__post_init__()
        NullBranchSettings.__post_init__(self)
        check(self.remap in ("random", "farthest"), "remap", self.remap, "random or farthest")
        check(self.retain_target in RETAIN_TARGETS, "retain_target", self.retain_target, " or ".join(RETAIN_TARGETS))


class RLMethod(ScopedMethod):
    """Random-label erasure (Fan et al. 2024, Eq. 7): `||f(z|c_f) - sg(f(z|c'))||^2 + alpha L_retain`.
    RL trains every weight in scope; it has no mask."""

    config: RLConfig

    def compute_loss(self, denoiser, sampler: Sampler) -> tuple[torch.Tensor, dict[str, Any]]:
        def predict(z, t, c):
            return sampler.task.predict(denoiser, z, t, c)

        forget = sampler.forget(self.config.batch_size)
        noisy = sampler.noisy(forget.x0)
        forget_loss = remap_loss(predict, noisy, forget.cond, sampler.anchor(forget.cond))
        retain_loss = self.retain_loss(denoiser, sampler)
        loss = forget_loss + self.config.alpha * retain_loss
        logs = {"forget_loss": forget_loss.item(), "retain_loss": retain_loss.item()}
        loss = self.with_null_branch(loss, logs, denoiser, sampler, forget, noisy)
        return loss, {"loss": loss.item(), **logs}


register_method("rl", config_cls=RLConfig, method_cls=RLMethod,
                description="random-label remapping on every weight in scope (SalUn's ablation without a "
                            "mask, Fan et al., ICLR 2024)")
