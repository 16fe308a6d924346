"""Memorization proxies for diffusion models, per sample, and the low/medium/high split of RUM.

RUM (Zhao et al., NeurIPS 2024; Zhao & Triantafillou 2024) refines unlearning by splitting the forget set
by how strongly each sample is memorized, and unlearning the subsets in order. Exact memorization scores
need leave-out retraining; a proxy ranks samples cheaply. The default proxy is the model's own denoising
loss on the sample under its condition,

    loss(x0, c) = E_{t, eps} l(x0, c),   l = ||target - f(z_t | .)||^2,

high for the atypical samples that a model has to memorize to fit (Feldman & Zhang 2020). On the digits
model it ranks a leave-subset-out ground truth best of all the proxies here (Spearman 0.84;
benchmarks/quality/memorization.md), ahead of the running `training_loss` (0.76). The CFG gain
`E[l(x0, null) - l(x0, c)]` (how much the condition lowers the loss) ranks it inversely (-0.45) and is
kept for comparison; so are `cond_magnitude`, the size of the condition's part of the prediction (after
Wen et al., ICLR 2024), `E ||f(z_t | c) - f(z_t | null)||^2` (0.24), and `holdout`, how much an image's
loss rises when the model is fine-tuned for a while on held-out data (the "holdout retraining" proxy
of Zhao et al.; -0.14). `training_loss` is the running loss of each image over the base's own training,
recorded by `erasekit train-base`.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import check
from ..errors import ConfigError
from ..io import check_output_free, portable, write_json
from ..pipelines.adapters import adapter_for
from ..pipelines.digits import load_digits_16
from ..pipelines.loading import load_any_pipeline, resolve_model_path
from ..progress import Progress
from ..version import __version__
from .class_data import load_class_data
from .fisher import stratified_levels
from .methods.finetune import FinetuneConfig, FinetuneMethod
from .tasks import ClassConditionalTask
from .trainer import EraseTrainer, TrainConfig

PARTS = ("low", "medium", "high")
TRAINING_LOSSES = "training_losses.json"


class TrainingLosses:
    """The running training loss of every training image: the mean of its own conditional denoising
    losses over the draws of a training run (`FinetuneMethod(..., recorder)`), with the number of draws.
    Saved beside the weights that `erasekit train-base` writes, as `training_losses.json`."""

    def __init__(self, count: int):
        self.total = torch.zeros(count, dtype=torch.float64)
        self.draws = torch.zeros(count, dtype=torch.long)

    def add(self, index: torch.Tensor, losses: torch.Tensor) -> None:
        self.total.index_add_(0, index.long(), losses.double())
        self.draws.index_add_(0, index.long(), torch.ones_like(index, dtype=torch.long))

    def means(self) -> torch.Tensor:
        return self.total / self.draws.clamp(min=1)

    def save(self, path, extra: dict) -> None:
        means = self.means()
        write_json(path, {"erasekit_version": __version__, **extra, "count": len(means),
                          "mean_loss": [round(float(v), 8) for v in means], "draws": self.draws.tolist()})


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
    progress = Progress(len(x), "score samples", unit="sample")
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
        progress.update(len(xs))
    progress.close()
    return {k: torch.cat(v) if v else torch.empty(0, dtype=torch.float64) for k, v in out.items()}


def denoising_errors(denoiser: torch.nn.Module, task, x: torch.Tensor, c: torch.Tensor, seed: int, draws: int = 8,
                     batch_size: int = 32, ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the mean denoising error given its condition and without (`branch_statistics`)."""
    stats = branch_statistics(denoiser, task, x, c, seed, draws, batch_size, ids)
    return stats["conditional"], stats["unconditional"]


def denoising_loss(denoiser: torch.nn.Module, task, x: torch.Tensor, c: torch.Tensor, seed: int, draws: int = 8,
                   batch_size: int = 32) -> torch.Tensor:
    """The mean denoising error `E l(x0, c)` of each sample under its own condition, as float64 on the
    host (the conditional branch of `branch_statistics` alone)."""
    return branch_statistics(denoiser, task, x, c, seed, draws, batch_size, conditional_only=True)["conditional"]


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


def training_loss_scores(model: str, index: torch.Tensor, count: int) -> torch.Tensor:
    """The running training losses that `erasekit train-base` recorded beside the model in `model`
    (`training_losses.json`), at the training-set positions `index` of a `count`-image training set."""

    path = Path(resolve_model_path(model)) / TRAINING_LOSSES
    if not path.is_file():
        raise ConfigError(f"'{model}' has no {TRAINING_LOSSES}: the training_loss proxy reads the per-image losses "
                          f"that `erasekit train-base digits` records while it trains; train the base with it, or "
                          f"use --proxy cfg_gain")
    try:
        record = json.loads(path.read_text())
        losses = torch.tensor(record["mean_loss"], dtype=torch.float64)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"'{path}' is not a training-loss record ({err}); re-create it with "
                          f"`erasekit train-base digits`") from None
    if losses.ndim != 1 or len(losses) != count:
        raise ConfigError(f"'{path}' holds {len(losses)} losses but the data has {count} training images; it was "
                          f"recorded on other data (use data: digits, the split train-base trains on)")
    return losses[index]


def holdout_divergence(denoiser: torch.nn.Module, task, x: torch.Tensor, c: torch.Tensor, holdout_x: torch.Tensor,
                       holdout_c: torch.Tensor, seed: int, draws: int = 8, batch_size: int = 32,
                       steps: int = 200, learning_rate: float = 1e-4) -> torch.Tensor:
    """How much each sample's conditional denoising error rises when a copy of the model is fine-tuned
    for `steps` on held-out data (`holdout_x`, `holdout_c`; plain CFG training at batch 128 under
    `seed`): `l_tuned(x0, c) - l(x0, c)` on the same noise draws. `denoiser` is not changed."""


    before = branch_statistics(denoiser, task, x, c, seed, draws, batch_size, conditional_only=True)["conditional"]
    tuned = copy.deepcopy(denoiser).train()
    holdout = ClassConditionalTask(task.adapter, task.scheduler, holdout_x, holdout_c, forget=[])
    config = TrainConfig(seed=seed, learning_rate=learning_rate, max_steps=steps, log_every=steps)
    with tempfile.TemporaryDirectory(prefix="erasekit-holdout-") as work:
        EraseTrainer(tuned, FinetuneMethod(FinetuneConfig(batch_size=128)), holdout, config, work).train()
    after = branch_statistics(tuned.eval(), task, x, c, seed, draws, batch_size, conditional_only=True)["conditional"]
    return after - before


def partition(scores: torch.Tensor, parts: Sequence[str] = PARTS) -> dict[str, torch.Tensor]:
    """Indices of the samples in each part, by rank of score (ties by index): the lowest third is "low",
    and so on; part sizes differ by at most one."""
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    split = torch.tensor_split(torch.tensor(order, dtype=torch.long), len(parts))
    return {name: idx for name, idx in zip(parts, split)}


@torch.no_grad()
def prompt_magnitude(denoiser: torch.nn.Module, adapter, scheduler, conditions: dict[str, torch.Tensor], seed: int,
                     draws: int = 8, shape=None, null: int = 0) -> torch.Tensor:
    """Wen et al.'s (ICLR 2024) memorization signal of each prompt at the first sampling step: on `draws`
    pure-noise latents `z_T` (prompt k's seeded `seed + k`), `E ||f(z_T | p) - f(z_T | "")||^2`. A memorized
    prompt pulls the prediction hard towards its training image from the very first step. `conditions`
    holds one row per prompt of every conditioning tensor (`adapter.encode_prompts`); row `null` is the
    empty prompt and gets no score. float64 on the host, one score per other row, in order."""
    device = next(denoiser.parameters()).device
    shape = shape or adapter.sample_shape()
    rows = [k for k in range(len(next(iter(conditions.values())))) if k != null]
    out = []
    for k in Progress.wrap(rows, "score prompts", unit="prompt"):
        z, t = adapter.pure_noise(scheduler, draws, shape, torch.Generator().manual_seed(seed + k))
        ids = torch.cat([torch.full((draws,), k), torch.full((draws,), null)])
        cond = {name: value[ids].to(device) for name, value in conditions.items()}
        both = adapter.predict(denoiser, torch.cat([z, z]).to(device, denoiser.dtype), torch.cat([t, t]).to(device),
                               cond).float()
        with_p, without = both.chunk(2)
        out.append((with_p - without).pow(2).flatten(1).mean(1).double().mean().cpu())
    return torch.stack(out) if out else torch.empty(0, dtype=torch.float64)


@dataclass
class MemorizationConfig:
    """`erasekit memorization`: per-sample proxy scores of a class-conditional model's forget samples, or
    per-prompt scores of a text-to-image model's prompts."""

    model: str | None = field(default=None, metadata={"help": "model to score (directory, Hub id, bundled:NAME)"})
    variant: str | None = field(default=None, metadata={"help": "weights variant of the model, e.g. fp16"})
    forget: list[int] = field(default_factory=list, metadata={"help": "class-conditional: classes whose samples "
                                                                      "are scored"})
    prompts: str | None = field(default=None, metadata={"help": "text-to-image: a text file of prompts to score, one "
                                                                "per line"})
    data: str = field(default="digits", metadata={"help": "digits (scikit-learn's) or generated"})
    data_samples_per_class: int = field(default=200, metadata={"help": "data: generated: images per class"})
    proxy: str | None = field(default=None, metadata={
        "help": "loss (default for classes): E l(x0, c); cfg_gain: E[l(x0, null) - l(x0, c)]; cond_magnitude (the "
                "one for prompts): E||f(z_t|c) - f(z_t|null)||^2 (Wen et al.); training_loss: the running loss "
                "train-base recorded; holdout: the loss rise after fine-tuning on held-out data"})
    draws: int = field(default=128, metadata={"help": "noise draws per sample or prompt"})
    batch_size: int = field(default=32, metadata={"help": "samples per forward pass (does not change scores)"})
    seed: int = field(default=0, metadata={"help": "noise seed"})
    holdout_steps: int = field(default=200, metadata={"help": "holdout: fine-tuning steps on the held-out digits"})
    holdout_lr: float = field(default=1e-4, metadata={"help": "holdout: fine-tuning learning rate"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, ...; null: cuda when there is one"})
    output: str = field(default="memorization.json", metadata={"help": "JSON path for the scores"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output"})

    def __post_init__(self):
        if not self.model:
            raise ConfigError("'model' is missing; pass --model DIR_OR_ID")
        if self.prompts is not None:
            check(isinstance(self.prompts, str) and Path(self.prompts).is_file(), "prompts", self.prompts,
                  "a text file with one prompt per line")
            check(self.forget == [], "forget", self.forget, "empty with --prompts (a text-to-image model's "
                  "prompts are scored, not classes)")
            self.proxy = self.proxy or "cond_magnitude"
            check(self.proxy == "cond_magnitude", "proxy", self.proxy, "cond_magnitude with --prompts (the others "
                  "need training images)")
        else:
            check(isinstance(self.forget, list) and len(self.forget) > 0
                  and all(isinstance(c, int) and not isinstance(c, bool) for c in self.forget),
                  "forget", self.forget, "a non-empty list of class ids, e.g. --forget 8 (or --prompts FILE for a "
                  "text-to-image model)")
            self.proxy = self.proxy or "loss"
        check(self.data in ("digits", "generated"), "data", self.data, "'digits' or 'generated'")
        check(self.proxy in ALL_PROXIES, "proxy", self.proxy, f"one of {', '.join(ALL_PROXIES)}")
        for name in ("draws", "batch_size", "data_samples_per_class", "holdout_steps"):
            value = getattr(self, name)
            check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, value,
                  "an integer >= 1")
        check(isinstance(self.holdout_lr, (int, float)) and not isinstance(self.holdout_lr, bool)
              and 0 < self.holdout_lr < 1, "holdout_lr", self.holdout_lr, "a number in (0, 1), e.g. 1e-4")
        if self.proxy in ("training_loss", "holdout"):
            check(self.data == "digits", "data", self.data, f"'digits' with --proxy {self.proxy} (it needs the "
                  f"training split's positions and the held-out test split)")


PROXIES = {"loss": denoising_loss, "cfg_gain": cfg_gain,  # from the model and noise draws alone
           "cond_magnitude": cond_magnitude}
ALL_PROXIES = (*PROXIES, "training_loss", "holdout")


def read_prompt_lines(path: str) -> list[str]:
    """The non-empty lines of a prompt file, stripped."""
    try:
        prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"prompt file '{path}' cannot be read ({err}); fix 'prompts'") from None
    if not prompts:
        raise ConfigError(f"prompt file '{path}' has no prompt; write one prompt per line")
    return prompts


def forget_set_scores(proxy: str, denoiser: torch.nn.Module, task, model: str, seed: int, draws: int,
                      batch_size: int = 32, holdout_steps: int = 200, holdout_lr: float = 1e-4) -> torch.Tensor:
    """`proxy`'s score of every forget sample of a class-conditional `task` (built on the digits training
    split for `training_loss` and `holdout`, whose held-out data is the digits test split); `model` is
    where a recorded training loss is read."""
    x, c = task.forget_x, task.forget_c
    if proxy == "training_loss":
        return training_loss_scores(model, task.forget_index, task.data_count)
    if proxy == "holdout":
        split = load_digits_16()
        return holdout_divergence(denoiser, task, x, c, split.test_images, split.test_labels, seed, draws, batch_size,
                                  holdout_steps, holdout_lr)
    return PROXIES[proxy](denoiser, task, x, c, seed, draws, batch_size)


def _score_classes(cfg: MemorizationConfig, pipe, adapter, device) -> tuple[torch.Tensor, list[dict], dict]:
    forget = adapter.check_forget(cfg.forget)
    images, labels = load_class_data(cfg.data, cfg.data_samples_per_class, cfg.seed, pipe)
    task = ClassConditionalTask.for_pipeline(pipe, images, labels, forget=forget)
    denoiser = adapter.denoiser.to(device).eval()
    scores = forget_set_scores(cfg.proxy, denoiser, task, cfg.model, cfg.seed, cfg.draws, cfg.batch_size,
                               cfg.holdout_steps, cfg.holdout_lr)
    picked = task.forget_index
    samples = [{"index": int(picked[k]), "label": int(labels[picked[k]])} for k in range(len(picked))]
    extra = {"forget": forget, "data": cfg.data}
    if cfg.proxy == "holdout":
        extra.update(holdout_steps=cfg.holdout_steps, holdout_lr=cfg.holdout_lr)
    return scores, samples, extra


def _score_prompts(cfg: MemorizationConfig, adapter, device) -> tuple[torch.Tensor, list[dict], dict]:
    prompts = read_prompt_lines(cfg.prompts)
    for part in adapter.frozen_parts().values():
        part.to(device)
    denoiser = adapter.denoiser.to(device).eval()
    resolution = adapter.default_resolution()
    conditions = adapter.encode_prompts(["", *prompts], device, None, resolution)
    scores = prompt_magnitude(denoiser, adapter, adapter.training_scheduler(), conditions, cfg.seed, cfg.draws,
                              adapter.sample_shape(resolution))
    return scores, [{"index": k, "prompt": p} for k, p in enumerate(prompts)], {"prompts": cfg.prompts,
                                                                                   "resolution": resolution}


def run_memorization(cfg: MemorizationConfig) -> dict:
    """Score every forget-class sample (class-conditional models) or every prompt of `cfg.prompts`
    (text-to-image models), split the scores into low/medium/high and write them as JSON."""

    check_output_free(cfg.output, cfg.overwrite, "output")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe = load_any_pipeline(cfg.model, variant=cfg.variant, device=device)
    adapter = adapter_for(pipe)
    if adapter.family == "class-conditional":
        if cfg.prompts is not None:
            raise ConfigError(f"'{cfg.model}' is a class-conditional {type(pipe).__name__}; score its classes with "
                              f"--forget C instead of --prompts")
        scores, samples, extra = _score_classes(cfg, pipe, adapter, device)
    else:
        if cfg.prompts is None:
            raise ConfigError(f"'{cfg.model}' is a text-to-image {type(pipe).__name__}; give the prompts to score "
                              f"with --prompts FILE (one per line)")
        scores, samples, extra = _score_prompts(cfg, adapter, device)
    parts = partition(scores)
    part_of = {int(i): name for name, idx in parts.items() for i in idx}
    record = {
        "erasekit_version": __version__, "model": portable(cfg.model), **extra,
        "proxy": cfg.proxy, "draws": cfg.draws, "seed": cfg.seed,
        "parts": {name: {"count": len(idx), "score_min": float(scores[idx].min()) if len(idx) else None,
                         "score_max": float(scores[idx].max()) if len(idx) else None} for name, idx in parts.items()},
        "samples": [{**sample, "score": float(scores[k]), "part": part_of[k]} for k, sample in enumerate(samples)],
    }
    write_json(cfg.output, record, overwrite=cfg.overwrite)
    return record
