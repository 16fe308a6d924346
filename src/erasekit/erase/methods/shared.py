"""What several methods share: the diffusion-loss batch settings, the retain term and the scoped trainer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ...config import check
from ...pipelines.adapters import NoisyBatch
from ..objectives import data_denoiser, diffusion_loss, mixture_posterior, mse, retain_mixture_target
from ..registry import SINGLE, Method, Shard
from ..saliency import parameters_in_scope
from ..tasks import Batch, ConditionTask, Sampler

SCOPE_HELP = "regex or preset (all, xattn, attn, no-norm, no-time) of trained weights"


def redefault(cls: type, name: str, default: Any, help: str | None = None) -> Any:
    """`cls`'s field `name` with another default (and, if given, a method-specific help text)."""
    metadata = {"help": help} if help else cls.__dataclass_fields__[name].metadata
    return field(default=default, metadata=metadata)


@dataclass
class DiffusionSettings:
    """The batch and CFG condition dropout of a method's diffusion losses."""

    batch_size: int = field(default=64, metadata={"help": "forget and retain samples per micro-batch, each"})
    label_dropout: float = field(default=0.1, metadata={"help": "CFG null-label rate in the retain loss"})

    def __post_init__(self):
        check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        check(0 <= self.label_dropout < 1, "label_dropout", self.label_dropout, "in [0, 1)")


@dataclass
class RetainSettings(DiffusionSettings):
    """A forget objective plus `alpha` times the retain loss, on the weights `scope` selects."""

    alpha: float = field(default=2.0, metadata={"help": "weight of the retain diffusion loss"})
    scope: str = field(default="all", metadata={"help": SCOPE_HELP})

    def __post_init__(self):
        super().__post_init__()
        check(self.alpha >= 0, "alpha", self.alpha, ">= 0")


NULL_TARGETS = ("none", "retain-mixture", "retain-data", "anchor", "base")
NULL_GATES = ("none", "posterior")


@dataclass
class NullBranchSettings:
    """The unconditional branch on forget samples: left as it is (the papers), or trained to a target."""

    null_target: str = field(default="none", metadata={
        "help": "target of the unconditional prediction on noised forget samples: none (untrained, as the papers), "
                "retain-mixture (the base's predictions under the kept conditions, weighted by its own posterior "
                "at z_t: the score of the data without the concept), retain-data (the optimal denoiser of the retain "
                "samples themselves, E[x0 | z_t] over them, from data_min_level up; the anchor target below), anchor "
                "(the base under the remap target) or base (the base's own unconditional prediction; with "
                "null_guidance, ESD's negatively guided target on the null branch)"})
    null_weight: float = field(default=1.0, metadata={"help": "weight of the null-branch term (null_target)"})
    null_batch_size: int = field(default=16, metadata={
        "help": "forget samples per micro-batch that the null-branch term uses (the first of the forget batch; "
                "retain-mixture's teacher runs once per kept condition on each)"})
    null_max_level: float = field(default=1.0, metadata={
        "help": "the null-branch term's noise levels: 1 uses the forget batch's timesteps (the whole schedule); "
                "below 1 they are drawn uniformly from [0, null_max_level) T, where a noised forget sample is "
                "still told apart from the others (at higher noise the unconditional prediction serves all "
                "generations)"})
    null_guidance: float = field(default=0.0, metadata={
        "help": "guide the null target away from the forget condition: target + null_guidance * (target - "
                "f_base(z_t | c_f)). At 0 a target read from the base at low noise still rebuilds the concept the "
                "noisy sample shows"})
    data_min_level: float = field(default=0.3, metadata={
        "help": "the retain-data targets (null_target, forget_target) stand from this share of the schedule up; "
                "below it the anchor target does. At low noise the data's posterior falls on one retain sample, "
                "and the noise it implies for a forget sample far from all of them grows without bound"})
    null_gate: str = field(default="none", metadata={
        "help": "none (the target on every noised forget sample) or posterior (the target blended with the base's "
                "unconditional prediction by the base's posterior of the forget concept at z_t: the unconditional "
                "branch moves only where the noised sample is still told apart as the concept, and stays the "
                "base's where it could be another class)"})

    def __post_init__(self):
        check(self.null_target in NULL_TARGETS, "null_target", self.null_target, ", ".join(NULL_TARGETS))
        check(self.null_weight >= 0, "null_weight", self.null_weight, ">= 0")
        check(self.null_batch_size >= 1, "null_batch_size", self.null_batch_size, ">= 1")
        check(0 < self.null_max_level <= 1, "null_max_level", self.null_max_level, "in (0, 1]")
        check(self.null_guidance >= 0, "null_guidance", self.null_guidance, ">= 0")
        check(self.null_gate in NULL_GATES, "null_gate", self.null_gate, " or ".join(NULL_GATES))
        check(0 <= self.data_min_level < 1, "data_min_level", self.data_min_level, "in [0, 1)")


class ScopedMethod(Method):
    """A method that trains every weight its `config.scope` selects, with an optional retain term."""

    teacher = None

    def __init__(self, config):
        self.config = config

    @property
    def retain_to_teacher(self) -> bool:
        """`retain_target: teacher` (only methods whose config has that field)."""
        return getattr(self.config, "retain_target", "noise") == "teacher"

    @property
    def null_target(self) -> str:
        return getattr(self.config, "null_target", "none")

    @property
    def needs_teacher(self) -> bool:
        return self.retain_to_teacher or self.null_target != "none"

    def prepare(self, denoiser, task: ConditionTask, generator: torch.Generator, shard: Shard = SINGLE,
                teacher=None) -> None:
        self.teacher = teacher

    def trainable_parameters(self, denoiser, task: ConditionTask) -> dict[str, torch.nn.Parameter]:
        return parameters_in_scope(denoiser, self.config.scope, task.scopes)

    def retain_loss(self, denoiser, sampler: Sampler) -> torch.Tensor:
        """The loss on a retain batch, with CFG condition dropout: the ordinary diffusion loss, or with
        `retain_target: teacher` the distance to the frozen base's prediction on the same noisy batch."""
        retain = sampler.retain(self.config.batch_size)
        noisy = sampler.noisy(retain.x0)
        cond = sampler.drop(retain.cond, self.config.label_dropout)
        if not self.retain_to_teacher:
            return diffusion_loss(lambda z, t, c: sampler.task.predict(denoiser, z, t, c), noisy, cond)
        with torch.no_grad():
            target = sampler.task.predict(self.teacher, noisy.z_t, noisy.t, cond)
        return mse(sampler.task.predict(denoiser, noisy.z_t, noisy.t, cond), target)

    def null_branch_loss(self, denoiser, sampler: Sampler, forget: Batch, noisy: NoisyBatch) -> torch.Tensor:
        """`||f(z_t | null) - sg(target)||^2` on the first `null_batch_size` samples of the forget batch (noised
        as the batch, or as `null_max_level` says), the target as `null_target` says."""
        task, n, level = sampler.task, self.config.null_batch_size, self.config.null_max_level
        cond = forget.concept_cond[:n]  # guided away from the concept itself, also where a found condition stands
        if level < 1:
            noisy = sampler.noisy(forget.x0[:n], level)
        else:
            noisy = NoisyBatch(noisy.z_t[:n], noisy.t[:n], noisy.target[:n])
        with torch.no_grad():
            gated = self.config.null_gate == "posterior"
            mixture = teacher_mixture(self.teacher, task, noisy) \
                if gated or self.null_target == "retain-mixture" else None  # one teacher pass serves both
            if self.null_target == "anchor":
                target = task.predict(self.teacher, noisy.z_t, noisy.t, sampler.anchor(cond))
            elif self.null_target == "base":
                target = task.predict(self.teacher, noisy.z_t, noisy.t, task.null_cond(cond))
            elif self.null_target == "retain-data":
                anchor = sampler.anchor(cond)
                target = above_data_floor(task, noisy, self.config.data_min_level, lambda rows: task.predict(
                    self.teacher, noisy.z_t[rows], noisy.t[rows], anchor[rows]))
            else:
                target = retain_mixture_target(*mixture)
            if self.config.null_guidance:
                target = target + self.config.null_guidance * (target - task.predict(self.teacher, noisy.z_t,
                                                                                     noisy.t, cond))
            if gated:
                conditional, unconditional, keep = mixture
                mass = mixture_posterior(conditional, unconditional)[:, ~keep].sum(1).to(target.dtype)
                mass = mass.reshape(-1, *[1] * (target.dim() - 1))
                target = unconditional + mass * (target - unconditional)
        return mse(task.predict(denoiser, noisy.z_t, noisy.t, task.null_cond(cond)), target)

    def with_null_branch(self, loss: torch.Tensor, logs: dict, denoiser, sampler: Sampler, forget: Batch,
                         noisy: NoisyBatch) -> torch.Tensor:
        """`loss` plus `null_weight` times the null-branch term (its value logged), or `loss` as it is
        without a `null_target`."""
        if self.null_target == "none":
            return loss
        null_loss = self.null_branch_loss(denoiser, sampler, forget, noisy)
        logs["null_loss"] = null_loss.item()
        return loss + self.config.null_weight * null_loss


def teacher_mixture(teacher, task: ConditionTask, noisy) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's predictions under every forget and kept condition (K, B, ...) from one batched call, its
    unconditional prediction (B, ...), and which of the K conditions are kept (a (K,) bool)."""
    forget = task.condition_ids("forget")
    ids = forget + task.condition_ids("retain")
    b, k = noisy.z_t.shape[0], len(ids)
    z, t = noisy.z_t.repeat(k, *[1] * (noisy.z_t.dim() - 1)), noisy.t.repeat(k)
    cond = torch.as_tensor(ids, device=z.device).repeat_interleave(b)
    conditional = task.predict(teacher, z, t, cond).reshape(k, b, *noisy.z_t.shape[1:])
    unconditional = task.predict(teacher, noisy.z_t, noisy.t, task.null_cond(cond[:b]))
    return conditional, unconditional, torch.arange(k, device=z.device) >= len(forget)


def retain_data_target(task: ConditionTask, noisy: NoisyBatch) -> torch.Tensor:
    """The prediction target of the retain samples' optimal denoiser at `noisy.z_t` (`data_denoiser` over
    `task.retain_x`): what a model that fits the retain data exactly, and never saw the concept, predicts."""
    a, s = task.adapter.noise_scales(task.scheduler, noisy.t)
    x0, noise = data_denoiser(noisy.z_t, a, s, task.retain_x)
    dtype = noisy.z_t.dtype
    return task.adapter.target_of(task.scheduler, x0.to(dtype), noise.to(dtype), noisy.t).to(dtype)


def above_data_floor(task: ConditionTask, noisy: NoisyBatch, floor: float,
                     below: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`retain_data_target` on the samples whose noise level is at least `floor`; on the others `below(rows)`,
    the fallback target of the rows (a (B,) bool) it is given. Each is computed on its own rows only."""
    high = (task.adapter.noise_level(task.scheduler, noisy.t) >= floor).to(noisy.z_t.device)
    target = torch.empty_like(noisy.z_t)
    if high.any():
        target[high] = retain_data_target(task, NoisyBatch(noisy.z_t[high], noisy.t[high], noisy.target[high]))
    if not high.all():
        target[~high] = below(~high).to(target.dtype)
    return target
