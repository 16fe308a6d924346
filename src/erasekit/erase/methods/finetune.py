"""Plain CFG diffusion training on the retain data (trains the bundled base models), and its variant with
mnemonic codes mixed into each batch (`train-base digits --t-mix`, not registered: it needs the codes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..mnemonic import Mnemonic
from ..objectives import mse
from ..registry import Method, register_method
from ..tasks import Sampler
from .shared import DiffusionSettings, redefault


@dataclass
class FinetuneConfig(DiffusionSettings):
    """Plain CFG diffusion training on the retain data (used to train the bundled base models)."""

    batch_size: int = redefault(DiffusionSettings, "batch_size", 128, "samples per micro-batch")
    label_dropout: float = redefault(DiffusionSettings, "label_dropout", 0.1, "CFG null-label rate")


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


class MixedCodesMethod(FinetuneMethod):
    """`FinetuneMethod`'s CFG diffusion training with a share `codes.t_mix` of each batch replaced by the
    trained codes (drawn with the step's generator) under the flag: condition id `offset + c`, or
    `offset + null` where the label is dropped. The recorder sees the images' losses only."""

    def __init__(self, config, codes: Mnemonic, shape, offset: int, recorder=None):
        super().__init__(config, recorder)
        self.offset = offset
        self.codes, self.code_labels = codes.codes(shape, range(offset - 1))  # every class, not the null label
        self.n_codes = int(round(config.batch_size * codes.t_mix))

    def compute_loss(self, denoiser, sampler) -> tuple[torch.Tensor, dict]:
        n_images = self.config.batch_size - self.n_codes
        batch = sampler.retain(n_images)
        pick = torch.randint(len(self.codes), (self.n_codes,), generator=sampler.generator)
        x0 = torch.cat([batch.x0, self.codes[pick].to(batch.x0.device, batch.x0.dtype)])
        cond = sampler.drop(torch.cat([batch.cond, self.code_labels[pick].to(batch.cond.device)]),
                            self.config.label_dropout)
        cond[n_images:] += self.offset
        noisy = sampler.noisy(x0)
        pred = sampler.task.predict(denoiser, noisy.z_t, noisy.t, cond)
        loss = mse(pred, noisy.target)
        self.record(sampler, batch.index, cond, pred, noisy.target)
        return loss, {"loss": loss.item()}


register_method("finetune", config_cls=FinetuneConfig, method_cls=FinetuneMethod,
                description="plain CFG diffusion training on the retain data (trains base models)")
