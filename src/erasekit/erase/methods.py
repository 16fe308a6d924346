"""Erasure methods, their protocol and registry (in the manner of peft's `register_peft_method`).

A method gives the one trainer:
- `prepare(denoiser, task, generator, shard, teacher)`: work before training (a saliency mask); a method
  with `needs_teacher = True` receives a frozen copy of the base denoiser here;
- `trainable_parameters(denoiser, task)`: which weights it may change, and `mask` (or None) inside them;
- `compute_loss(denoiser, sampler) -> (loss, logs)`: one micro-batch's loss, drawing batches, noise and
  remapping targets from the trainer's `Sampler`;
- or, for a training-free method, `edit(denoiser, task) -> logs`, which changes the weights in closed form
  and replaces the training loop (with `needs_images = False` no images are gathered for it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import check
from ..errors import ConfigError
from .fisher import FisherSettings, fisher_scores
from .objectives import cfg_guided_loss, diffusion_loss, mse, remap_loss
from .saliency import SaliencyMask, compute_saliency_mask, parameters_in_scope, select_top_ratio
from .tasks import ConditionTask, Sampler

METHODS: dict[str, tuple[type, type]] = {}


@dataclass(frozen=True)
class Shard:
    """This process's place among `world` processes, and how to sum a tensor over all of them."""

    rank: int = 0
    world: int = 1
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None


SINGLE = Shard()


class Method:
    """The protocol every registered method follows (see the module docstring)."""

    mask: SaliencyMask | None = None
    needs_teacher = False
    needs_images = True  # False: the method works from the conditions alone (no forget/retain images)
    edit = None  # a training-free method defines `edit(denoiser, task) -> logs`
    model: str | None = None  # where the base model was loaded from (set by `erase`), for its sidecar files
    # Pipeline classes (by name, subclasses included) the method works on, and how to say so; None: every one.
    pipelines: tuple[str, ...] | None = None
    supported_models = "every supported model"

    def prepare(self, denoiser, task: ConditionTask, generator: torch.Generator, shard: Shard = SINGLE,
                teacher=None) -> None:
        """Nothing to compute before training."""

    def trainable_parameters(self, denoiser, task: ConditionTask) -> dict[str, torch.nn.Parameter]:
        return dict(denoiser.named_parameters())

    def compute_loss(self, denoiser, sampler: Sampler) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError


def register_method(name: str, config_cls: type, method_cls: type) -> None:
    """Register `method_cls` (built from a `config_cls` instance) under `name`. It need not subclass `Method`;
    any protocol attribute it leaves out (`mask`, `needs_teacher`, `needs_images`, `edit`) takes `Method`'s
    default."""
    if not (callable(getattr(method_cls, "compute_loss", None)) or callable(getattr(method_cls, "edit", None))):
        raise TypeError(f"method {name!r}: {method_cls.__name__} defines neither compute_loss (trained) nor "
                        "edit (training-free); define one of them")
    if not issubclass(method_cls, Method):
        method_cls = type(method_cls.__name__, (method_cls, Method), {"__module__": method_cls.__module__})
    METHODS[name] = (config_cls, method_cls)


def get_method(name: str) -> tuple[type, type]:
    if name not in METHODS:
        raise ConfigError(f"'method' is {name!r}; registered methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


RETAIN_TARGETS = ("noise", "teacher")


@dataclass
class RLConfig:
    """Random-label remapping on all weights in scope (SalUn's ablation without a mask)."""

    alpha: float = field(default=2.0, metadata={"help": "weight of the retain diffusion loss"})
    batch_size: int = field(default=64, metadata={"help": "forget and retain samples per micro-batch, each"})
    label_dropout: float = field(default=0.1, metadata={"help": "CFG null-label rate in the retain loss"})
    target_label: int | None = field(default=None, metadata={"help": "fixed remap class (overrides remap)"})
    remap: str = field(default="random", metadata={
        "help": "remap target: random (a kept class or anchor prompt per sample, as SalUn) or farthest (the one kept "
                "class, or anchor prompt, whose mean training image is farthest from the forget concept's)"})
    scope: str = field(default="all", metadata={"help": "regex or preset (all, xattn, attn, no-norm, no-time) of trained weights"})
    retain_target: str = field(default="noise", metadata={
        "help": "target of the retain loss: noise (the ordinary diffusion loss, as SalUn) or teacher (the frozen "
                "base's prediction on the same noisy retain batch, which is zero-gradient at the base)"})

    def __post_init__(self):
        check(self.alpha >= 0, "alpha", self.alpha, ">= 0")
        check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        check(0 <= self.label_dropout < 1, "label_dropout", self.label_dropout, "in [0, 1)")
        check(self.remap in ("random", "farthest"), "remap", self.remap, "random or farthest")
        check(self.retain_target in RETAIN_TARGETS, "retain_target", self.retain_target, " or ".join(RETAIN_TARGETS))


@dataclass
class SalUnConfig(RLConfig, FisherSettings):
    """SalUn (Fan et al., ICLR 2024): random-label remapping on the salient weights only."""

    saliency: str = field(default="gradient", metadata={
        "help": "weight score: gradient (SalUn's |sum of forget gradients|) or fisher (diagonal Fisher, "
                "F_f / (F_r + delta) with fisher_normalize; Yamashita et al.)"})
    ratio: float = field(default=0.5, metadata={"help": "fraction of in-scope weights in the mask, in (0, 1]"})
    saliency_guidance: float = field(default=2.0, metadata={"help": "CFG weight w in the saliency loss"})
    saliency_batch_size: int = field(default=64, metadata={"help": "forget samples per saliency batch"})
    saliency_passes: int = field(default=4, metadata={"help": "passes over the forget set, each at new timesteps"})
    mask_path: str | None = field(default=None, metadata={"help": "use this saved mask instead of computing one"})

    def __post_init__(self):
        super().__post_init__()
        FisherSettings.__post_init__(self)
        check(self.saliency in ("gradient", "fisher"), "saliency", self.saliency, "gradient or fisher")
        check(0 < self.ratio <= 1, "ratio", self.ratio, "in (0, 1]")
        check(self.saliency_guidance >= 0, "saliency_guidance", self.saliency_guidance, ">= 0")
        check(self.saliency_batch_size >= 1, "saliency_batch_size", self.saliency_batch_size, ">= 1")
        check(self.saliency_passes >= 1, "saliency_passes", self.saliency_passes, ">= 1")


@dataclass
class FinetuneConfig:
    """Plain CFG diffusion training on the retain data (used to train the bundled base models)."""

    batch_size: int = field(default=128, metadata={"help": "samples per micro-batch"})
    label_dropout: float = field(default=0.1, metadata={"help": "CFG null-label rate"})

    def __post_init__(self):
        check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        check(0 <= self.label_dropout < 1, "label_dropout", self.label_dropout, "in [0, 1)")


class FinetuneMethod(Method):
    """Plain CFG diffusion training on the retain set. With a `recorder` (e.g. `TrainingLosses`), every
    conditional draw's own loss is passed to `recorder.add(retain positions, losses)`; the batch's loss
    and the optimisation are unchanged."""

    def __init__(self, config: FinetuneConfig, recorder=None):
        self.config = config
        self.recorder = recorder

    def compute_loss(self, denoiser, sampler: Sampler) -> tuple[torch.Tensor, dict[str, Any]]:
        batch = sampler.retain(self.config.batch_size)
        noisy = sampler.noisy(batch.x0)
        cond = sampler.drop(batch.cond, self.config.label_dropout)
        pred = sampler.task.predict(denoiser, noisy.z_t, noisy.t, cond)
        loss = mse(pred, noisy.target)  # = diffusion_loss, with the prediction kept for the recorder
        self.record(sampler, batch.index, cond, pred, noisy.target)
        return loss, {"loss": loss.item()}

    def record(self, sampler: Sampler, index: torch.Tensor, cond: torch.Tensor, pred: torch.Tensor,
               target: torch.Tensor) -> None:
        """Pass the conditional draws' own losses (the first `len(index)` of the batch) to the recorder."""
        if self.recorder is None:
            return
        n = len(index)
        kept = (cond[:n] != sampler.task.null_cond(cond[:n])).cpu()
        each = (pred[:n].detach().float() - target[:n].float()).pow(2).flatten(1).mean(1).cpu()
        self.recorder.add(index[kept], each[kept])


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
    def needs_teacher(self) -> bool:
        return self.retain_to_teacher

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
        return loss, {"loss": loss.item(), "forget_loss": forget_loss.item(), "retain_loss": retain_loss.item()}


class SalUnMethod(RLMethod):
    """RL restricted to the weights most salient for the forget concept (Fan et al. 2024, Eq. 6-7)."""

    config: SalUnConfig

    def prepare(self, denoiser, task: ConditionTask, generator: torch.Generator, shard: Shard = SINGLE,
                teacher=None) -> None:
        super().prepare(denoiser, task, generator, shard, teacher)
        if self.config.mask_path:
            from .masks import load_mask

            self.mask = load_mask(self.config.mask_path, denoiser)
            return
        self.mask = self.compute_mask(denoiser, task, generator, shard)

    def compute_mask(self, unet, task: ConditionTask, generator: torch.Generator, shard: Shard = SINGLE) -> SaliencyMask:
        """Each forget batch has its own seeded noise, and each process takes every `world`-th batch,
        so any number of processes sums the same per-batch gradients (then all-reduced)."""
        device = next(unet.parameters()).device
        cfg = self.config
        if cfg.saliency == "fisher":
            params = parameters_in_scope(unet, cfg.scope, task.scopes)
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            scores = fisher_scores(unet, task, params, cfg, "data", seed, cfg.saliency_guidance, shard)
            return SaliencyMask(select_top_ratio(scores, cfg.ratio), cfg.ratio, cfg.scope,
                                {"saliency": "fisher-ratio" if cfg.fisher_normalize else "fisher"})
        batches = [
            b for _ in range(cfg.saliency_passes) for b in task.forget_batches(cfg.saliency_batch_size, generator)
        ]
        base_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        mine = [(i, b) for i, b in enumerate(batches) if i % shard.world == shard.rank]

        def loss_fn(item):
            i, batch = item
            batch_generator = torch.Generator().manual_seed(base_seed + i)
            noisy = task.noisy(batch.x0.to(device), batch_generator)
            cond = batch.cond.to(device)
            predict = lambda z, t, c: task.predict(unet, z, t, c)  # noqa: E731
            return cfg_guided_loss(predict, noisy, cond, task.null_cond(cond), cfg.saliency_guidance)

        return compute_saliency_mask(unet, mine, loss_fn, cfg.ratio, cfg.scope, shard.reduce, task.scopes)


@dataclass
class ESDConfig:
    """ESD (Gandikota et al., ICCV 2023): pull `f(z|c_f)` to the frozen base's negatively guided prediction."""

    negative_guidance: float = field(default=1.0, metadata={"help": "ESD's eta: target f0(z|null) - eta (f0(z|c) - f0(z|null))"})
    batch_size: int = field(default=64, metadata={"help": "forget samples per micro-batch (and retain, if alpha > 0)"})
    alpha: float = field(default=0.0, metadata={"help": "weight of a retain diffusion loss (0: ESD as published)"})
    label_dropout: float = field(default=0.1, metadata={"help": "CFG null-label rate in the retain loss"})
    scope: str = field(default="xattn", metadata={
        "help": "trained weights: xattn (ESD-x), no-xattn (ESD-u), all, or a regex"})

    def __post_init__(self):
        check(self.negative_guidance > 0, "negative_guidance", self.negative_guidance, "> 0")
        check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        check(self.alpha >= 0, "alpha", self.alpha, ">= 0")
        check(0 <= self.label_dropout < 1, "label_dropout", self.label_dropout, "in [0, 1)")


class ESDMethod(ScopedMethod):
    """Erased Stable Diffusion (Gandikota et al. 2023, Eq. 2): `||f(z|c_f) - [f0(z|null) - eta (f0(z|c_f) -
    f0(z|null))]||^2`, with `f0` the frozen base. `z_t` is the concept's data noised at a random timestep
    (for text-to-image models that data is generated by the base, as ESD samples it). On a model with no
    cross-attention (class-conditional UNets) `xattn` selects nothing: use `all`."""

    config: ESDConfig
    needs_teacher = True

    def compute_loss(self, denoiser, sampler: Sampler) -> tuple[torch.Tensor, dict[str, Any]]:
        task, cfg = sampler.task, self.config
        forget = sampler.forget(cfg.batch_size)
        noisy = sampler.noisy(forget.x0)
        with torch.no_grad():
            z2, t2 = torch.cat([noisy.z_t, noisy.z_t]), torch.cat([noisy.t, noisy.t])
            cond_pred, null_pred = task.predict(self.teacher, z2, t2, torch.cat([forget.cond, task.null_cond(forget.cond)])).chunk(2)
            target = null_pred - cfg.negative_guidance * (cond_pred - null_pred)
        pred = task.predict(denoiser, noisy.z_t, noisy.t, forget.cond)
        forget_loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        logs = {"forget_loss": forget_loss.item()}
        loss = forget_loss
        if cfg.alpha > 0:
            retain_loss = self.retain_loss(denoiser, sampler)
            loss = loss + cfg.alpha * retain_loss
            logs["retain_loss"] = retain_loss.item()
        return loss, {"loss": loss.item(), **logs}


@dataclass
class GAConfig:
    """Gradient ascent on the forget diffusion loss plus `alpha` times the retain loss (a standard baseline)."""

    alpha: float = field(default=2.0, metadata={"help": "weight of the retain diffusion loss"})
    batch_size: int = field(default=64, metadata={"help": "forget and retain samples per micro-batch, each"})
    label_dropout: float = field(default=0.1, metadata={"help": "CFG null-label rate in the retain loss"})
    scope: str = field(default="all", metadata={"help": "regex or preset (all, xattn, attn, no-norm, no-time) of trained weights"})

    def __post_init__(self):
        check(self.alpha >= 0, "alpha", self.alpha, ">= 0")
        check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        check(0 <= self.label_dropout < 1, "label_dropout", self.label_dropout, "in [0, 1)")


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


@dataclass
class RetrainConfig:
    """Retraining from scratch without the forget data: the exact-unlearning reference (for small models)."""

    batch_size: int = field(default=128, metadata={"help": "retain samples per micro-batch"})
    label_dropout: float = field(default=0.1, metadata={"help": "CFG null-label rate"})
    init_seed: int = field(default=0, metadata={"help": "seed of the fresh weights"})

    def __post_init__(self):
        check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        check(0 <= self.label_dropout < 1, "label_dropout", self.label_dropout, "in [0, 1)")


class RetrainMethod(FinetuneMethod):
    """Fresh weights (the denoiser's class built from its config under `init_seed`), then the ordinary
    diffusion loss on the retain data only. Pair it with the base's own training settings."""

    config: RetrainConfig

    def prepare(self, denoiser, task: ConditionTask, generator: torch.Generator, shard: Shard = SINGLE,
                teacher=None) -> None:
        torch.manual_seed(self.config.init_seed)
        fresh = type(denoiser).from_config(denoiser.config)
        with torch.no_grad():
            denoiser.load_state_dict(fresh.state_dict())


register_method("salun", config_cls=SalUnConfig, method_cls=SalUnMethod)
register_method("retrain", config_cls=RetrainConfig, method_cls=RetrainMethod)
register_method("esd", config_cls=ESDConfig, method_cls=ESDMethod)
register_method("ga", config_cls=GAConfig, method_cls=GAMethod)
register_method("rl", config_cls=RLConfig, method_cls=RLMethod)
register_method("finetune", config_cls=FinetuneConfig, method_cls=FinetuneMethod)

from . import oneshot, uce  # noqa: E402,F401  (register the training-free one-shot and UCE methods)
