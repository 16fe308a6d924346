"""Fisher-information saliency and mnemonic codes (Yamashita et al., "One-Shot Machine Unlearning with
Mnemonic Code").

The diagonal empirical Fisher of a loss over samples x_1..x_n is `F = (1/n) sum_i (dl(x_i)/dw)^2`, the
mean of squared per-sample gradients (SalUn's score squares the *sum* instead). A weight is salient for
forgetting when the forget data's Fisher is large and the retain data's is small: `F_f / (F_r + delta)`.

Mnemonic codes stand in for data: fixed standard-normal inputs in the denoiser's input space, seeded per
condition id (a class label or a prompt's id), so one class's codes never depend on which other classes
are listed beside it. With them, erasure needs no forget or retain images at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..config import check
from ..errors import ConfigError
from .objectives import cfg_guided_loss, diffusion_loss
from .saliency import for_each_gradient

CODE_SEED_STRIDE = 1_000_003  # a prime: (seed, condition id) pairs never share a generator seed below it


@dataclass
class FisherSettings:
    """How a Fisher score is estimated (shared by SalUn's `saliency: fisher` and the one-shot method)."""

    fisher_samples: int = field(default=64, metadata={"help": "forget inputs, and retain inputs, for the Fisher"})
    fisher_normalize: bool = field(default=True, metadata={"help": "score F_f / (F_r + delta) rather than F_f"})
    fisher_delta: float = field(default=1e-3, metadata={"help": "delta, as a fraction of the mean retain Fisher"})

    def __post_init__(self):
        check(isinstance(self.fisher_samples, int) and self.fisher_samples >= 1, "fisher_samples",
              self.fisher_samples, "an integer >= 1")
        check(self.fisher_delta > 0, "fisher_delta", self.fisher_delta, "> 0")


def fisher_diagonal(
    module: torch.nn.Module,
    params: Mapping[str, torch.nn.Parameter],
    samples: Iterable,
    loss_fn: Callable[[object], torch.Tensor],
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The diagonal empirical Fisher `(1/n) sum_i g_i^2` of `loss_fn` over `samples`.

    Each item of `samples` must be one sample (its loss is one backward pass, so its gradient is the
    per-sample gradient). Squares are summed in float32 on the parameters' device; `reduce` (an
    all-reduce) sums them and the count over processes. The result is float32 on the host.
    """
    sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    count = for_each_gradient(module, params, samples, loss_fn,
                              lambda name, grad: sums[name].addcmul_(grad.float(), grad.float()))
    device = next(iter(sums.values())).device if sums else torch.device("cpu")
    total = torch.tensor(float(count), device=device)
    if reduce is not None:
        total = reduce(total)
    if float(total) == 0:
        raise ValueError("the Fisher information needs at least one sample; none was given")
    out = {}
    for name in list(sums):
        s = sums.pop(name)
        if reduce is not None:
            s = reduce(s)
        out[name] = (s / total).cpu()
    return out


def fisher_ratio(forget: dict[str, torch.Tensor], retain: Mapping[str, torch.Tensor],
                 delta: float) -> dict[str, torch.Tensor]:
    """`F_f / (F_r + delta * mean(F_r))`, in place in `forget`: large where only the forget data relies on a
    weight. `delta` is relative to the mean retain Fisher over all weights, so it does not depend on the
    loss's scale; `delta` > 0 keeps weights with no retain information finite."""
    total = sum(float(v.double().sum()) for v in retain.values())
    numel = sum(v.numel() for v in retain.values())
    floor = delta * total / max(1, numel)
    if floor <= 0:
        raise ValueError("fisher_ratio needs delta > 0 and a retain Fisher that is not all zero")
    for name, f in forget.items():
        f.div_(retain[name] + floor)
    return forget


def mnemonic_codes(shape: Sequence[int], conditions: Sequence[int], per_condition: int,
                   seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_condition` standard-normal codes of `shape` for each condition id, and their ids.

    Condition `c`'s codes come from a generator seeded `seed * CODE_SEED_STRIDE + c`, so they are the same
    whatever other conditions are listed, and different seeds give independent (e.g. held-out) codes.
    """
    if per_condition < 1:
        raise ValueError("per_condition must be >= 1")
    codes, ids = [], []
    for c in conditions:
        generator = torch.Generator().manual_seed(seed * CODE_SEED_STRIDE + int(c))
        codes.append(torch.randn((per_condition, *shape), generator=generator))
        ids.append(torch.full((per_condition,), int(c), dtype=torch.long))
    return torch.cat(codes), torch.cat(ids)


def stratified_levels(n: int) -> torch.Tensor:
    """`n` noise levels in [0, 1), one in each of n equal strata: `(i + 0.5) / n`. Every estimate that uses
    them covers the whole noise schedule, which a few uniform draws often miss (the loss's gradients differ
    by orders of magnitude between low and high noise)."""
    return (torch.arange(n, dtype=torch.float64) + 0.5) / n


def concept_fisher(denoiser: torch.nn.Module, task, params: Mapping[str, torch.nn.Parameter], x: torch.Tensor,
                   c: torch.Tensor, seed: int, guidance: float = 0.0, shard=None,
                   null_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """The diagonal Fisher of the diffusion loss over the inputs `x` with condition ids `c` (one `ConditionTask`).

    Sample i is noised at the i-th of `len(x)` stratified noise levels with noise seeded `seed + i`, so two
    calls with the same seed and count (the forget and the retain side) compare like with like. Process
    `rank` takes every `world`-th sample, so any number of processes sums the same per-sample terms. With
    `guidance` w > 0 the loss is SalUn's CFG-guided one (`objectives.cfg_guided_loss`). `null_weight` adds that
    many times the null branch's diffusion loss on the same noised sample (the weights the unconditional
    model uses for these inputs).
    """

    device = next(denoiser.parameters()).device
    rank, world = (shard.rank, shard.world) if shard is not None else (0, 1)
    levels = stratified_levels(len(x))

    def predict(z, t, k):
        return task.predict(denoiser, z, t, k)

    def loss_fn(i: int) -> torch.Tensor:
        noisy = task.noisy(x[i:i + 1].to(device), torch.Generator().manual_seed(seed + i), levels[i:i + 1])
        cond = c[i:i + 1].to(device)
        if guidance:
            loss = cfg_guided_loss(predict, noisy, cond, task.null_cond(cond), guidance)
        else:
            loss = diffusion_loss(predict, noisy, cond)
        if null_weight:
            loss = loss + null_weight * diffusion_loss(predict, noisy, task.null_cond(cond))
        return loss

    mine = [i for i in range(len(x)) if i % world == rank]
    return fisher_diagonal(denoiser, params, mine, loss_fn, shard.reduce if shard is not None else None)


def side_inputs(task, side: str, inputs: str, n: int, seed: int,
                trained: Callable[[list[int], int], tuple[torch.Tensor, torch.Tensor]] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` inputs of one side ("forget" or "retain") of a `ConditionTask`, and their condition ids.

    codes: `ceil(n / k)` mnemonic codes for each of the side's k conditions, seeded by `seed`. mnemonic:
    `trained(ids, ceil(n / k))`, the codes the model was trained with (`erase.mnemonic`). data: `n`
    images (or all there are) in a seeded order.
    """
    if inputs in ("codes", "mnemonic"):
        ids = task.condition_ids(side)
        if inputs == "mnemonic":
            return trained(ids, math.ceil(n / len(ids)))
        return mnemonic_codes(task.sample_shape, ids, math.ceil(n / len(ids)), seed)
    x, c = (task.forget_x, task.forget_c) if side == "forget" else (task.retain_x, task.retain_c)
    if len(x) == 0:
        raise ConfigError(f"'inputs' is 'data' but the task has no {side} images; set 'inputs: codes' for "
                          "data-free erasure, or give the concept images")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], c[idx]


def fisher_scores(denoiser: torch.nn.Module, task, params: Mapping[str, torch.nn.Parameter],
                  settings: FisherSettings, inputs: str, seed: int, guidance: float = 0.0,
                  shard=None, trained=None, null_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """`F_f`, or `F_f / (F_r + delta)` with `fisher_normalize`, over `fisher_samples` inputs per side (both
    sides at the same noise levels and noise draws); `trained` as for `side_inputs`; `null_weight` as for
    `concept_fisher`, on both sides."""
    forget = side_inputs(task, "forget", inputs, settings.fisher_samples, seed, trained)
    noise_seed = seed * CODE_SEED_STRIDE
    scores = concept_fisher(denoiser, task, params, *forget, noise_seed, guidance, shard, null_weight)
    if settings.fisher_normalize:
        retain = side_inputs(task, "retain", inputs, settings.fisher_samples, seed + 1, trained)
        fisher_ratio(scores, concept_fisher(denoiser, task, params, *retain, noise_seed, guidance, shard, null_weight),
                     settings.fisher_delta)
    return scores
