"""Retraining from fresh weights without the forget data: exact unlearning, the reference for small models."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..registry import SINGLE, Shard, register_method
from ..tasks import ConditionTask
from .finetune import FinetuneConfig, FinetuneMethod


@dataclass
class RetrainConfig(FinetuneConfig):
    """Retraining from scratch without the forget data: the exact-unlearning reference (for small models)."""

    init_seed: int = field(default=0, metadata={"help": "seed of the fresh weights"})


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


register_method("retrain", config_cls=RetrainConfig, method_cls=RetrainMethod,
                description="retraining from fresh weights without the forget data (exact unlearning)")
