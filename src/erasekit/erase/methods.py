"""Erasure methods and their registry (in the manner of peft's `register_peft_method`).

A method supplies three things to the one trainer: which parameters it may touch, its mask,
and `compute_loss(unet, task, generator) -> (loss, logs)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import check
from ..errors import ConfigError
from .objectives import add_noise, cfg_guided_loss, diffusion_loss, remap_loss
from .saliency import SaliencyMask, compute_saliency_mask, parameters_in_scope

METHODS: dict[str, tuple[type, type]] = {}


@dataclass(frozen=True)
class Shard:
    """This process's place among `world` processes, and how to sum a tensor over all of them."""

    rank: int = 0
    world: int = 1
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None


SINGLE = Shard()


def register_method(name: str, config_cls: type, method_cls: type) -> None:
    METHODS[name] = (config_cls, method_cls)


def get_method(name: str) -> tuple[type, type]:
    if name not in METHODS:
        raise ConfigError(f"'method' is {name!r}; registered methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


@dataclass
class RLConfig:
    """Random-label remapping on all weights in scope (SalUn's ablation without a mask)."""

    alpha: float = field(default=2.0, metadata={"help": "weight of the retain diffusion loss"})
    batch_size: int = field(default=64, metadata={"help": "forget and retain samples per micro-batch, each"})
    label_dropout: float = field(default=0.1, metadata={"help": "CFG null-label rate in the retain loss"})
    target_label: int | None = field(default=None, metadata={"help": "fixed remap class; random retain class if null"})
    scope: str = field(default="all", metadata={"help": "regex or preset (all, xattn, attn, no-norm) of trained weights"})

    def __post_init__(self):
        check(self.alpha >= 0, "alpha", self.alpha, ">= 0")
        check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        check(0 <= self.label_dropout < 1, "label_dropout", self.label_dropout, "in [0, 1)")


@dataclass
class SalUnConfig(RLConfig):
    """SalUn (Fan et al., ICLR 2024): random-label remapping on the salient weights only."""

    ratio: float = field(default=0.5, metadata={"help": "fraction of in-scope weights in the mask, in (0, 1]"})
    saliency_guidance: float = field(default=2.0, metadata={"help": "CFG weight w in the saliency loss"})
    saliency_batch_size: int = field(default=64, metadata={"help": "forget samples per saliency batch"})
    saliency_passes: int = field(default=4, metadata={"help": "passes over the forget set, each at new timesteps"})
    mask_path: str | None = field(default=None, metadata={"help": "use this saved mask instead of computing one"})

    def __post_init__(self):
        super().__post_init__()
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


class FinetuneMethod:
    def __init__(self, config: FinetuneConfig):
        self.config = config
        self.mask: SaliencyMask | None = None

    def trainable_parameters(self, unet) -> dict[str, torch.nn.Parameter]:
        return dict(unet.named_parameters())

    def prepare(self, unet, task, generator: torch.Generator, shard: Shard = SINGLE) -> None:
        """Nothing to compute before training."""

    def compute_loss(self, unet, task, generator: torch.Generator, device) -> tuple[torch.Tensor, dict[str, Any]]:
        batch = task.retain_batch(self.config.batch_size, generator, device)
        noisy = add_noise(task.scheduler, batch.x0, generator)
        cond = task.drop_cond(batch.cond, self.config.label_dropout, generator)
        loss = diffusion_loss(lambda z, t, c: task.predict(unet, z, t, c), noisy, cond)
        return loss, {"loss": loss.item()}


class RLMethod:
    """Random-label erasure (Fan et al. 2024, Eq. 7): `||f(z|c_f) - sg(f(z|c'))||^2 + alpha L_retain`."""

    def __init__(self, config: RLConfig):
        self.config = config
        self.mask: SaliencyMask | None = None

    def trainable_parameters(self, unet) -> dict[str, torch.nn.Parameter]:
        return parameters_in_scope(unet, self.config.scope)

    def prepare(self, unet, task, generator: torch.Generator, shard: Shard = SINGLE) -> None:
        """RL trains every weight in scope; no mask."""

    def compute_loss(self, unet, task, generator: torch.Generator, device) -> tuple[torch.Tensor, dict[str, Any]]:
        def predict(z, t, c):
            return task.predict(unet, z, t, c)

        n = self.config.batch_size
        forget = task.forget_batch(n, generator, device)
        noisy = add_noise(task.scheduler, forget.x0, generator)
        forget_loss = remap_loss(predict, noisy, forget.cond, task.anchor_cond(forget.cond, generator))
        retain = task.retain_batch(n, generator, device)
        retain_noisy = add_noise(task.scheduler, retain.x0, generator)
        retain_cond = task.drop_cond(retain.cond, self.config.label_dropout, generator)
        retain_loss = diffusion_loss(predict, retain_noisy, retain_cond)
        loss = forget_loss + self.config.alpha * retain_loss
        return loss, {"loss": loss.item(), "forget_loss": forget_loss.item(), "retain_loss": retain_loss.item()}


class SalUnMethod(RLMethod):
    """RL restricted to the weights most salient for the forget concept (Fan et al. 2024, Eq. 6-7)."""

    config: SalUnConfig

    def prepare(self, unet, task, generator: torch.Generator, shard: Shard = SINGLE) -> None:
        if self.config.mask_path:
            from .masks import load_mask

            self.mask = load_mask(self.config.mask_path, unet)
            return
        self.mask = self.compute_mask(unet, task, generator, shard)

    def compute_mask(self, unet, task, generator: torch.Generator, shard: Shard = SINGLE) -> SaliencyMask:
        """Each forget batch has its own seeded noise, and each process takes every `world`-th batch,
        so any number of processes sums the same per-batch gradients (then all-reduced)."""
        device = next(unet.parameters()).device
        cfg = self.config
        batches = [
            b for _ in range(cfg.saliency_passes) for b in task.forget_batches(cfg.saliency_batch_size, generator)
        ]
        base_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        mine = [(i, b) for i, b in enumerate(batches) if i % shard.world == shard.rank]

        def loss_fn(item):
            i, batch = item
            batch_generator = torch.Generator().manual_seed(base_seed + i)
            noisy = add_noise(task.scheduler, batch.x0.to(device), batch_generator)
            cond = batch.cond.to(device)
            predict = lambda z, t, c: task.predict(unet, z, t, c)  # noqa: E731
            return cfg_guided_loss(predict, noisy, cond, task.null_cond(cond), cfg.saliency_guidance)

        return compute_saliency_mask(unet, mine, loss_fn, cfg.ratio, cfg.scope, shard.reduce)


register_method("salun", config_cls=SalUnConfig, method_cls=SalUnMethod)
register_method("rl", config_cls=RLConfig, method_cls=RLMethod)
register_method("finetune", config_cls=FinetuneConfig, method_cls=FinetuneMethod)
