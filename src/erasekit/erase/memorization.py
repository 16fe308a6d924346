"""Memorization proxies for diffusion models, per sample, and the low/medium/high split of RUM.

RUM (Zhao et al., NeurIPS 2024; Zhao & Triantafillou 2024) refines unlearning by splitting the forget set
by how strongly each sample is memorized, and unlearning the subsets in order. Exact memorization scores
need leave-out retraining; a proxy ranks samples cheaply. The default proxy here is the CFG gain

    gain(x0, c) = E_{t, eps} [ l(x0, null) - l(x0, c) ],   l = ||target - f(z_t | .)||^2,

how much the condition lowers the model's denoising loss on this very sample: a model that has learned
a sample by heart predicts it well given its label or prompt, far better than unconditionally. The
other proxy, `cond_magnitude`, is the size of the condition's part of the prediction (after Wen et al.,
ICLR 2024), `E ||f(z_t | c) - f(z_t | null)||^2`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..config import check
from ..errors import ConfigError
from .fisher import stratified_levels
from .tasks import ClassConditionalTask

PARTS = ("low", "medium", "high")


def noisy_draws(task, x0: torch.Tensor, draws: int, seed: int, device, ids: Sequence[int] | None = None):
    """`draws` noisings of each sample of `x0`: sample i, draw j at stratified noise level j of `draws`,
    noise seeded `seed + ids[i]` (one generator per sample; `ids` defaults to 0, 1, ...), so a sample's
    draws never depend on the batch."""
    levels = stratified_levels(draws)
    ids = range(len(x0)) if ids is None else ids
    parts = [task.noisy(x0[i:i + 1].expand(draws, *x0.shape[1:]).to(device),
                        torch.Generator().manual_seed(seed + int(ids[i])), levels) for i in range(len(x0))]
    return tuple(torch.cat([getattr(p, k) for p in parts]) for k in ("z_t", "t", "target"))


@torch.no_grad()
def branch_statistics(denoiser: torch.nn.Module, task, x: torch.Tensor, c: torch.Tensor, seed: int, draws: int = 8,
                      batch_size: int = 32, ids: torch.Tensor | None = None,
                      conditional_only: bool = False) -> dict[str, torch.Tensor]:
    """Per sample, over `draws` noisings (`noisy_draws`; sample i's noise is seeded `seed + ids[i]`, by
    default its position), the means of: the denoising error given its condition, `conditional`
    (`||target - f(z_t | c)||^2`, per element); without it, `unconditional`; and the squared difference of
    the two predictions, `difference` (`||f(z_t | c) - f(z_t | null)||^2`). float64 on the host. Both
    branches see the same noisy input; nothing depends on `batch_size`, and a sample keeps its noise in
    any subset that passes its id. `conditional_only` skips the unconditional branch (half the work) and
    returns `conditional` alone."""
    device = next(denoiser.parameters()).device
    ids = torch.arange(len(x)) if ids is None else torch.as_tensor(ids)
    out: dict[str, list[torch.Tensor]] = {"conditional": []} if conditional_only else {
        "conditional": [], "unconditional": [], "difference": []}
    for start in range(0, len(x), batch_size):
        xs, cs = x[start:start + batch_size], c[start:start + batch_size].to(device)
        z, t, target = noisy_draws(task, xs, draws, seed, device, ids[start:start + batch_size].tolist())
        cond = cs.repeat_interleave(draws)
        target = target.float()
        if conditional_only:
            values = {"conditional": task.predict(denoiser, z, t, cond).float() - target}
        else:
            both = task.predict(denoiser, torch.cat([z, z]), torch.cat([t, t]),
                                torch.cat([cond, task.null_cond(cond)]))
            with_c, without = both.float().chunk(2)
            values = {"conditional": with_c - target, "unconditional": without - target, "difference": with_c - without}
        for key, value in values.items():
            out[key].append(value.pow(2).flatten(1).mean(1).view(len(xs), draws).double().mean(1).cpu())
    return {k: torch.cat(v) if v else torch.empty(0, dtype=torch.float64) for k, v in out.items()}


def denoising_errors(denoiser: torch.nn.Module, task, x: torch.Tensor, c: torch.Tensor, seed: int, draws: int = 8,
                     batch_size: int = 32, ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the mean denoising error given its condition and without (`branch_statistics`)."""
    stats = branch_statistics(denoiser, task, x, c, seed, draws, batch_size, ids)
    return stats["conditional"], stats["unconditional"]


def cfg_gain(denoiser: torch.nn.Module, task, x: torch.Tensor, c: torch.Tensor, seed: int, draws: int = 8,
             batch_size: int = 32) -> torch.Tensor:
    """The CFG gain `l(x0, null) - l(x0, c)` of each sample (`x[i]` with condition id `c[i]` of a
    `ConditionTask`), as float64 on the host."""
    conditional, unconditional = denoising_errors(denoiser, task, x, c, seed, draws, batch_size)
    return unconditional - conditional


def cond_magnitude(denoiser: torch.nn.Module, task, x: torch.Tensor, c: torch.Tensor, seed: int, draws: int = 8,
                   batch_size: int = 32) -> torch.Tensor:
    """The magnitude of the conditional part of the prediction, `E ||f(z_t | c) - f(z_t | null)||^2`, on
    noisings of each sample: Wen et al. (ICLR 2024) detect memorized prompts by this magnitude along
    the sampling trajectory; here it is taken on the training sample's own noisings, as float64."""
    return branch_statistics(denoiser, task, x, c, seed, draws, batch_size)["difference"]


def partition(scores: torch.Tensor, parts: Sequence[str] = PARTS) -> dict[str, torch.Tensor]:
    """Indices of the samples in each part, by rank of score (ties by index): the lowest third is "low",
    and so on; part sizes differ by at most one."""
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    split = torch.tensor_split(torch.tensor(order, dtype=torch.long), len(parts))
    return {name: idx for name, idx in zip(parts, split)}


@dataclass
class MemorizationConfig:
    """`erasekit memorization`: per-sample proxy scores of a class-conditional model's forget samples."""

    model: str | None = field(default=None, metadata={"help": "model to score (directory, Hub id, bundled:NAME)"})
    forget: list[int] = field(default_factory=list, metadata={"help": "classes whose samples are scored"})
    data: str = field(default="digits", metadata={"help": "digits (scikit-learn's) or generated"})
    data_samples_per_class: int = field(default=200, metadata={"help": "data: generated: images per class"})
    proxy: str = field(default="cfg_gain", metadata={
        "help": "cfg_gain: E[l(x0, null) - l(x0, c)]; cond_magnitude: E||f(z_t|c) - f(z_t|null)||^2 (Wen et al.)"})
    draws: int = field(default=128, metadata={"help": "noise draws per sample (stratified noise levels)"})
    batch_size: int = field(default=32, metadata={"help": "samples per forward pass (does not change scores)"})
    seed: int = field(default=0, metadata={"help": "noise seed"})
    output: str = field(default="memorization.json", metadata={"help": "JSON path for the scores"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output"})

    def __post_init__(self):
        if not self.model:
            raise ConfigError("'model' is missing; pass --model DIR_OR_ID")
        check(isinstance(self.forget, list) and len(self.forget) > 0 and all(isinstance(c, int) for c in self.forget),
              "forget", self.forget, "a non-empty list of class ids, e.g. --forget 8")
        check(self.data in ("digits", "generated"), "data", self.data, "'digits' or 'generated'")
        check(self.proxy in PROXIES, "proxy", self.proxy, f"one of {sorted(PROXIES)}")
        for name in ("draws", "batch_size", "data_samples_per_class"):
            value = getattr(self, name)
            check(isinstance(value, int) and value >= 1, name, value, "an integer >= 1")


PROXIES = {"cfg_gain": cfg_gain, "cond_magnitude": cond_magnitude}


def run_memorization(cfg: MemorizationConfig) -> dict:
    """Score every forget-class sample, split the scores into low/medium/high and write them as JSON."""
    from .. import __version__
    from ..io import check_output_free, portable, write_json
    from ..pipelines.adapters import adapter_for
    from ..pipelines.loading import load_any_pipeline
    from .class_data import load_class_data

    check_output_free(cfg.output, cfg.overwrite, "output")
    pipe = load_any_pipeline(cfg.model)
    adapter = adapter_for(pipe)
    if adapter.family != "class-conditional":
        raise ConfigError(f"'{cfg.model}' is a {type(pipe).__name__}; `erasekit memorization` scores the samples "
                          f"of class-conditional models")
    forget = adapter.check_forget(cfg.forget)
    images, labels = load_class_data(cfg, pipe)
    picked = torch.nonzero(torch.isin(labels, torch.tensor(forget))).squeeze(1)
    task = ClassConditionalTask.for_pipeline(pipe, images, labels, forget=forget)
    denoiser = adapter.denoiser.eval()
    scores = PROXIES[cfg.proxy](denoiser, task, images[picked], labels[picked], cfg.seed, cfg.draws, cfg.batch_size)
    parts = partition(scores)
    part_of = {int(i): name for name, idx in parts.items() for i in idx}
    record = {
        "erasekit_version": __version__, "model": portable(cfg.model), "forget": forget, "data": cfg.data,
        "proxy": cfg.proxy, "draws": cfg.draws, "seed": cfg.seed,
        "parts": {name: {"count": len(idx), "score_min": float(scores[idx].min()) if len(idx) else None,
                         "score_max": float(scores[idx].max()) if len(idx) else None} for name, idx in parts.items()},
        "samples": [{"index": int(picked[k]), "label": int(labels[picked[k]]), "score": float(scores[k]),
                     "part": part_of[k]} for k in range(len(picked))],
    }
    write_json(cfg.output, record, overwrite=cfg.overwrite)
    return record
