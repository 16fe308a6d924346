"""SalUn (Fan et al., ICLR 2024): random-label remapping on the weights most salient for the concept."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...config import check
from ..fisher import FisherSettings, fisher_scores
from ..masks import load_mask
from ..objectives import cfg_guided_loss, diffusion_loss
from ..registry import SINGLE, Shard, register_method
from ..saliency import SaliencyMask, compute_saliency_mask, parameters_in_scope, select_top_ratio
from ..tasks import ConditionTask
from .rl import RLConfig, RLMethod


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
    saliency_branches: str = field(default="both", metadata={
        "help": "with a null_target, the saliency loss: both (the CFG-guided loss plus null_weight times the null "
                "branch's diffusion loss on the forget samples: the weights of both trained branches) or "
                "conditional (the CFG-guided loss alone, as without a null_target)"})

    def __post_init__(self):
        super().__post_init__()
        FisherSettings.__post_init__(self)
        check(self.saliency in ("gradient", "fisher"), "saliency", self.saliency, "gradient or fisher")
        check(0 < self.ratio <= 1, "ratio", self.ratio, "in (0, 1]")
        check(self.saliency_guidance >= 0, "saliency_guidance", self.saliency_guidance, ">= 0")
        check(self.saliency_batch_size >= 1, "saliency_batch_size", self.saliency_batch_size, ">= 1")
        check(self.saliency_passes >= 1, "saliency_passes", self.saliency_passes, ">= 1")
        check(self.saliency_branches in ("both", "conditional"), "saliency_branches", self.saliency_branches,
              "both or conditional")


class SalUnMethod(RLMethod):
    """RL restricted to the weights most salient for the forget concept (Fan et al. 2024, Eq. 6-7)."""

    config: SalUnConfig

    def prepare(self, denoiser, task: ConditionTask, generator: torch.Generator, shard: Shard = SINGLE,
                teacher=None) -> None:
        super().prepare(denoiser, task, generator, shard, teacher)
        if self.config.mask_path:
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
        null_weight = cfg.null_weight if self.null_target != "none" and cfg.saliency_branches == "both" else 0.0

        def loss_fn(item):
            i, batch = item
            batch_generator = torch.Generator().manual_seed(base_seed + i)
            noisy = task.noisy(batch.x0.to(device), batch_generator)
            cond = batch.cond.to(device)
            predict = lambda z, t, c: task.predict(unet, z, t, c)  # noqa: E731
            loss = cfg_guided_loss(predict, noisy, cond, task.null_cond(cond), cfg.saliency_guidance)
            if null_weight:  # the null branch is trained too: its weights for the concept count
                loss = loss + null_weight * diffusion_loss(predict, noisy, task.null_cond(cond))
            return loss

        return compute_saliency_mask(unet, mine, loss_fn, cfg.ratio, cfg.scope, shard.reduce, task.scopes)


register_method("salun", config_cls=SalUnConfig, method_cls=SalUnMethod,
                description="saliency-masked random-label remapping (SalUn, Fan et al., ICLR 2024)")
