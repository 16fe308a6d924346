"""Random-label remapping (Fan et al., ICLR 2024): SalUn's objective on every weight in scope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ...config import check
from ..objectives import mse, remap_loss
from ..registry import register_method
from ..tasks import Sampler
from .shared import NullBranchSettings, RetainSettings, ScopedMethod, above_data_floor

RETAIN_TARGETS = ("noise", "teacher")
FORGET_TARGETS = ("anchor", "retain-data")


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
    forget_weight: float = field(default=1.0, metadata={"help": "weight of the forget (remap) term"})
    forget_target: str = field(default="anchor", metadata={
        "help": "what the forget term pulls the concept's prediction to: anchor (the prediction under the remap "
                "target, SalUn) or retain-data (from data_min_level up, the optimal denoiser of the retain "
                "samples, E[x0 | z_t] over them: what a model that never saw the concept predicts; the anchor "
                "below). With remap_guidance it stands for the guided target"})
    remap_guidance: float = field(default=0.0, metadata={
        "help": "0: the forget term pulls f(z_t | c_f) to sg(f(z_t | c')) (SalUn). g > 0: it pulls the CFG-guided "
                "prediction u + g (f(z_t | c_f) - u), the model's own null prediction u held fixed, to the base's "
                "guided prediction under c' (u0 + g (f0(z_t | c') - u0)). Set it to the sampling guidance scale "
                "with a null_target: a null branch moved away from the concept is otherwise amplified back into "
                "it by CFG under the forget label"})
    remap_negative: float = field(default=0.0, metadata={
        "help": "with remap_guidance: eta >= 0 subtracts eta (f0(z_t | c_f) - u0), the base's own guidance toward "
                "the forget concept, from the guided target (ESD's negative guidance on top of the remap). Where "
                "the base under c' still keeps a half-formed concept image, the target then moves away from it"})

    def __post_init__(self):
        super().__post_init__()
        NullBranchSettings.__post_init__(self)
        check(self.remap in ("random", "farthest"), "remap", self.remap, "random or farthest")
        check(self.retain_target in RETAIN_TARGETS, "retain_target", self.retain_target, " or ".join(RETAIN_TARGETS))
        check(self.forget_weight > 0, "forget_weight", self.forget_weight, "> 0")
        check(self.forget_target in FORGET_TARGETS, "forget_target", self.forget_target, " or ".join(FORGET_TARGETS))
        check(self.remap_guidance == 0 or self.remap_guidance >= 1, "remap_guidance", self.remap_guidance,
              "0 (off) or a guidance scale >= 1")
        check(self.remap_negative >= 0, "remap_negative", self.remap_negative, ">= 0")
        check(not self.remap_negative or self.remap_guidance, "remap_negative", self.remap_negative,
              "0 unless remap_guidance is set (the negative term acts on the guided target)")


class RLMethod(ScopedMethod):
    """Random-label erasure (Fan et al. 2024, Eq. 7): `||f(z|c_f) - sg(f(z|c'))||^2 + alpha L_retain`.
    RL trains every weight in scope; it has no mask."""

    config: RLConfig

    @property
    def needs_teacher(self) -> bool:
        return super().needs_teacher or self.config.remap_guidance > 0

    def compute_loss(self, denoiser, sampler: Sampler) -> tuple[torch.Tensor, dict[str, Any]]:
        def predict(z, t, c):
            return sampler.task.predict(denoiser, z, t, c)

        forget = sampler.forget(self.config.batch_size)
        noisy = sampler.noisy(forget.x0)
        floor = self.config.data_min_level if self.config.forget_target == "retain-data" else None
        if self.config.remap_guidance:
            forget_loss = guided_remap_loss(predict, self.teacher, sampler, noisy, forget.cond,
                                            self.config.remap_guidance, self.config.remap_negative, floor)
        elif floor is not None:
            anchor = sampler.anchor(forget.cond)
            with torch.no_grad():
                target = above_data_floor(sampler.task, noisy, floor,
                                          lambda rows: predict(noisy.z_t[rows], noisy.t[rows], anchor[rows]))
            forget_loss = mse(predict(noisy.z_t, noisy.t, forget.cond), target)
        else:
            forget_loss = remap_loss(predict, noisy, forget.cond, sampler.anchor(forget.cond))
        retain_loss = self.retain_loss(denoiser, sampler)
        loss = self.config.forget_weight * forget_loss + self.config.alpha * retain_loss  # x 1.0 is exact
        logs = {"forget_loss": forget_loss.item(), "retain_loss": retain_loss.item()}
        loss = self.with_null_branch(loss, logs, denoiser, sampler, forget, noisy)
        return loss, {"loss": loss.item(), **logs}


def guided_remap_loss(predict, teacher, sampler: Sampler, noisy, cond, guidance: float,
                      negative: float = 0.0, data_floor: float | None = None) -> torch.Tensor:
    """`||u + g (f(z_t | c_f) - u) - sg(u0 + g (f0(z_t | c') - u0) - eta (f0(z_t | c_f) - u0))||^2 / g^2`, with
    u = sg(f(z_t | null)) the model's null prediction and u0, f0 the frozen base's: the conditional branch is
    pulled to `u + (A0 - u) / g`, so that the guided output under the forget label is the base's guided
    output under the remap target (less eta times the base's guidance toward the concept), wherever the null
    branch has moved. With u = u0 and eta = 0 it is SalUn's target f0(z_t | c'). With `data_floor`, the retain
    samples' optimal denoiser stands for the guided target from that noise level up."""
    task = sampler.task
    anchor, null = sampler.anchor(cond), task.null_cond(cond)
    with torch.no_grad():
        u = predict(noisy.z_t, noisy.t, null)
        u0 = task.predict(teacher, noisy.z_t, noisy.t, null)
        guided = u0 + guidance * (task.predict(teacher, noisy.z_t, noisy.t, anchor) - u0)
        if negative:
            guided = guided - negative * (task.predict(teacher, noisy.z_t, noisy.t, cond) - u0)
        if data_floor is not None:
            guided = above_data_floor(task, noisy, data_floor, lambda rows: guided[rows])
        target = u + (guided - u) / guidance
    return mse(predict(noisy.z_t, noisy.t, cond), target)


register_method("rl", config_cls=RLConfig, method_cls=RLMethod,
                description="random-label remapping on every weight in scope (SalUn's ablation without a "
                            "mask, Fan et al., ICLR 2024)")
