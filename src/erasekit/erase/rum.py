"""RUM refinement (Zhao et al., NeurIPS 2024; Zhao & Triantafillou 2024): unlearn the forget set in
subsets of rising memorization.

A memorization proxy (`erase.memorization`) scores every forget sample; the scores split the set into
low, medium and high thirds, which are unlearned in that order, each with its own step budget
(`refine_steps`; 0 skips a subset). Stage k runs the erase method (its own mask from subset k, a fresh
optimizer) with subset k as the forget set. Its retain set is `refine_retain`:
- "progressive": the data minus subsets 1..k, as RUM defines it (forget samples not yet unlearned are
  still retained, with their own labels);
- "kept": the data minus the whole forget set at every stage.

After the base and after each stage, the mean denoising error under the sample's own label and the mean
CFG gain are recorded for each subset and for a fixed sample of retain data: the per-subset metrics
(`METRIC_DRAWS` draws per sample, or `refine_draws` if fewer).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import check
from .memorization import ALL_PROXIES, PARTS, denoising_errors, forget_set_scores, partition
from .saliency import SaliencyMask
from .trainer import EraseTrainer, TrainConfig

logger = logging.getLogger(__name__)

RETAIN_MODES = ("progressive", "kept")
RETAIN_PROBE = 256  # retain samples whose errors are recorded per stage
METRIC_DRAWS = 16  # noise draws per sample for the per-subset means (a mean over a subset needs fewer than a ranking)


@dataclass
class RefineConfig:
    """RUM: unlearn the forget samples in subsets of rising memorization (`refine: rum`)."""

    refine: str | None = field(default=None, metadata={
        "help": "rum: unlearn the forget samples in low/medium/high-memorization thirds, in that order (RUM)"})
    refine_proxy: str = field(default="loss", metadata={
        "help": "refine: memorization proxy that splits the set: loss (the base's own denoising loss), cfg_gain, "
                "cond_magnitude, training_loss (recorded by train-base) or holdout (fine-tuning on the held-out digits)"})
    refine_draws: int = field(default=128, metadata={"help": "refine: noise draws per sample for the proxy"})
    refine_steps: list[int] | None = field(default=None, metadata={
        "help": "refine: steps for the low, medium and high subsets (0 skips one); null: max_steps each"})
    refine_retain: str = field(default="progressive", metadata={
        "help": "refine: progressive (data minus the subsets unlearned so far) or kept (minus the whole forget set)"})

    def __post_init__(self):
        check(self.refine in (None, "rum"), "refine", self.refine, "rum or null")
        check(self.refine_proxy in ALL_PROXIES, "refine_proxy", self.refine_proxy, f"one of {', '.join(ALL_PROXIES)}")
        check(isinstance(self.refine_draws, int) and self.refine_draws >= 1, "refine_draws", self.refine_draws,
              "an integer >= 1")
        check(self.refine_retain in RETAIN_MODES, "refine_retain", self.refine_retain, f"one of {', '.join(RETAIN_MODES)}")
        steps = self.refine_steps
        check(steps is None or (isinstance(steps, list) and len(steps) == len(PARTS)
                                and all(isinstance(n, int) and n >= 0 for n in steps) and any(steps)),
              "refine_steps", steps, "three integers >= 0 (low, medium, high), not all 0, e.g. [100, 100, 100]")

    @property
    def needs_digits(self) -> bool:
        """Proxies that read the digits training run and its held-out split."""
        return bool(self.refine) and self.refine_proxy in ("training_loss", "holdout")


def subset_metrics(denoiser, task, subsets: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], seed: int,
                   draws: int) -> dict[str, dict[str, float]]:
    """Per subset (images, labels, noise ids): mean error given the label, mean CFG gain (error without
    minus error with). Each sample keeps its noise from stage to stage and from the proxy's scoring."""
    was_training = denoiser.training
    denoiser.eval()
    out = {}
    for name, (x, c, ids) in subsets.items():
        conditional, unconditional = denoising_errors(denoiser, task, x, c, seed, draws, ids=ids)
        out[name] = {"count": len(c), "loss": float(conditional.mean()) if len(c) else None,
                     "cfg_gain": float((unconditional - conditional).mean()) if len(c) else None}
    denoiser.train(was_training)
    return out


def union_mask(masks: list[SaliencyMask]) -> SaliencyMask | None:
    """The weights any stage could change (a delta over all stages must hold them all)."""
    if not masks:
        return None
    names = sorted({n for m in masks for n in m.masks})
    merged = {}
    for name in names:
        parts = [m.masks[name] for m in masks if name in m.masks]
        merged[name] = torch.stack([p.to("cpu", torch.bool) for p in parts]).any(0)
    return SaliencyMask(masks=merged, ratio=max(m.ratio for m in masks), scope=masks[-1].scope,
                        metadata={"refine": "rum", "stages": str(len(masks))})


def refine(denoiser, make_method, task, run: RefineConfig, train: TrainConfig, model: str, staging, accelerator,
           shard, teacher) -> tuple[Any, Any, dict]:
    """Score, split and unlearn the subsets in order (`model` names the base, for the proxies that read its
    training record). Returns the denoiser, the last stage's method (its mask replaced by the union over
    stages) and the record of proxy scores, parts and per-stage metrics."""
    forget_x, forget_c = task.forget_x, task.forget_c
    retain_x, retain_c = task.retain_x, task.retain_c
    denoiser.eval()
    scores = forget_set_scores(run.refine_proxy, denoiser, task, model, train.seed,
                               run.refine_draws)
    parts = partition(scores)
    probe = torch.randperm(len(retain_c), generator=torch.Generator().manual_seed(train.seed))[:RETAIN_PROBE]
    subsets = {name: (forget_x[idx], forget_c[idx], idx) for name, idx in parts.items()}
    subsets["retain"] = (retain_x[probe], retain_c[probe], probe + len(forget_c))
    budgets = run.refine_steps or [train.max_steps] * len(PARTS)
    metric_draws = min(run.refine_draws, METRIC_DRAWS)
    record: dict[str, Any] = {
        "proxy": run.refine_proxy, "draws": run.refine_draws, "metric_draws": metric_draws,
        "retain": run.refine_retain,
        "parts": {name: {"count": len(idx), "score_min": float(scores[idx].min()) if len(idx) else None,
                         "score_max": float(scores[idx].max()) if len(idx) else None,
                         "steps": steps} for (name, idx), steps in zip(parts.items(), budgets)},
        "base": subset_metrics(denoiser, task, subsets, train.seed, metric_draws),
        "stages": [],
    }
    unlearned: list[torch.Tensor] = []
    masks, method, last = [], None, {}
    try:
        for k, (name, steps) in enumerate(zip(PARTS, budgets)):
            if steps == 0 or len(parts[name]) == 0:
                continue
            unlearned.append(parts[name])
            task.forget_x, task.forget_c = subsets[name][:2]
            if run.refine_retain == "progressive":
                still = torch.ones(len(forget_c), dtype=torch.bool)
                still[torch.cat(unlearned)] = False
                task.retain_x, task.retain_c = torch.cat([retain_x, forget_x[still]]), torch.cat([retain_c,
                                                                                                  forget_c[still]])
            stage = dataclasses.replace(train, max_steps=steps, seed=train.seed + k)
            method = make_method()
            method.prepare(denoiser, task, torch.Generator().manual_seed(stage.seed), shard, teacher)
            if method.mask is not None:
                masks.append(method.mask)
            logger.info(f"RUM stage {k + 1}: unlearning the {name}-memorization subset ({len(parts[name])} "
                        f"samples) for {steps} steps")
            trainer = EraseTrainer(denoiser, method, task, stage, staging / "rum" / name, accelerator=accelerator)
            last = trainer.train()
            denoiser = trainer.denoiser
            record["stages"].append({"subset": name, "steps": steps, "train": last,
                                     "after": subset_metrics(denoiser, task, subsets, train.seed, metric_draws)})
    finally:
        task.forget_x, task.forget_c, task.retain_x, task.retain_c = forget_x, forget_c, retain_x, retain_c
    if method is not None and masks:
        method.mask = union_mask(masks)
    return denoiser, method, {**record, "last": last}
