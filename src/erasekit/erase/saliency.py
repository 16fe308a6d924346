"""SalUn weight saliency: gradient magnitudes of the forgetting loss and their exact global top-k."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from ..pipelines.adapters.base import UNET_SCOPES
from ..progress import Progress

SCOPES = UNET_SCOPES  # the default presets; each model adapter has its own
_DIGIT_BITS = 16


def scope_pattern(scope: str, presets: Mapping[str, str] = SCOPES) -> re.Pattern:
    """A preset name from `presets` (the model adapter's), or a custom regex searched in parameter names."""
    try:
        return re.compile(presets.get(scope, scope))
    except re.error as exc:
        raise ConfigError(
            f"'scope' is {scope!r}, which is neither a preset ({', '.join(presets)}) nor a valid regex ({exc})"
        ) from None


def parameters_in_scope(module: torch.nn.Module, scope: str,
                        presets: Mapping[str, str] = SCOPES) -> dict[str, torch.nn.Parameter]:
    """Parameters whose diffusers module path matches the scope."""
    pattern = scope_pattern(scope, presets)
    params = {n: p for n, p in module.named_parameters() if pattern.search(n)}
    if not params:
        raise ConfigError(f"'scope' {scope!r} matches no parameter of this {type(module).__name__}; choose another "
                          f"preset ({', '.join(presets)}) or a regex")
    return params


@contextlib.contextmanager
def only_grad_for(module: torch.nn.Module, params: Mapping[str, torch.nn.Parameter]) -> Iterator[None]:
    """Temporarily let gradients flow only into `params`."""
    before = {n: p.requires_grad for n, p in module.named_parameters()}
    keep = {id(p) for p in params.values()}
    for p in module.parameters():
        p.requires_grad_(id(p) in keep)
    try:
        yield
    finally:
        for n, p in module.named_parameters():
            p.requires_grad_(before[n])


def for_each_gradient(module: torch.nn.Module, params: Mapping[str, torch.nn.Parameter], items: Iterable,
                      loss_fn: Callable[[object], torch.Tensor],
                      add: Callable[[str, torch.Tensor], object]) -> int:
    """Backpropagate `loss_fn(item)` for each item, with gradients flowing only into `params`, and hand each
    parameter's gradient to `add(name, grad)` before it is cleared. Returns the number of items."""
    for p in params.values():
        p.grad = None
    count = 0
    total = len(items) if hasattr(items, "__len__") else None
    with only_grad_for(module, params), Progress(total, "gradients", unit="batch") as progress:
        for item in items:
            loss_fn(item).backward()
            count += 1
            for name, p in params.items():
                if p.grad is not None:
                    add(name, p.grad)
                    p.grad = None
            progress.update(1)
    return count


def saliency_scores(
    module: torch.nn.Module,
    params: Mapping[str, torch.nn.Parameter],
    batches: Iterable,
    loss_fn: Callable[[object], torch.Tensor],
    reduce_grads: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """|sum of forget-loss gradients| per weight (Fan et al. 2024, Eq. 5).

    Gradients are summed with their signs over all batches (and over processes through
    `reduce_grads`, e.g. an all-reduce), and only then is the absolute value taken. The sums are kept
    in float64 on the host, so the order of summation (one process or several) does not change the
    float32 scores, and so not the mask; on an accelerator they cost nothing beyond the gradients
    themselves. The scores come back in float32 on the host.
    """
    host = torch.device("cpu")
    sums = {name: torch.zeros(p.shape, dtype=torch.float64, device=host) for name, p in params.items()}
    for_each_gradient(module, params, batches, loss_fn, lambda name, grad: sums[name].add_(grad.to(host)))
    scores = {}
    for name, p in params.items():
        total = sums.pop(name)
        if reduce_grads is not None:  # one tensor at a time on the device the collective needs
            total = reduce_grads(total.to(p.device)).to(host)
        scores[name] = total.abs_().float()
    return scores


def _keys(score: torch.Tensor) -> torch.Tensor:
    """Order-preserving int32 keys: the bits of a non-negative float32 sort like the float."""
    return score.detach().float().contiguous().view(torch.int32).flatten()


def _kth_largest_key(scores: Mapping[str, torch.Tensor], k: int) -> tuple[int, int]:
    """Radix select, 16 bits at a time, of the k-th largest key over all tensors.

    Returns the key and how many elements equal to it belong to the top k. Extra memory is a
    65,536-bin histogram plus temporaries the size of one tensor.
    """
    prefix, remaining = 0, k
    for shift in (_DIGIT_BITS, 0):
        hist = None
        for score in scores.values():
            keys = _keys(score)
            if shift == 0:
                keys = keys[(keys >> _DIGIT_BITS) == prefix] & 0xFFFF
            else:
                keys = keys >> _DIGIT_BITS
            counts = torch.bincount(keys, minlength=1 << _DIGIT_BITS)
            hist = counts if hist is None else hist + counts
        from_top = hist.flip(0).cumsum(0)
        j = int(torch.searchsorted(from_top, torch.tensor(remaining, device=from_top.device)))
        digit = (1 << _DIGIT_BITS) - 1 - j
        remaining -= int(from_top[j] - hist[digit])
        prefix = digit if shift else (prefix << _DIGIT_BITS) | digit
    return prefix, remaining


def select_top_ratio(scores: Mapping[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """Exact global top-`ratio` of non-negative scores, as bool masks.

    Exactly `round(ratio * N)` entries are chosen. Ties at the threshold go to the earliest entries
    in sorted parameter-name order, then flat index order, so the result is deterministic. Nothing
    is concatenated or sorted: extra memory is O(largest tensor) plus the 1-byte masks.
    """
    if not 0 < ratio <= 1:
        raise ConfigError(f"'ratio' is {ratio!r} but must be in (0, 1]; fix 'ratio'")
    names = sorted(scores)
    ordered = {n: scores[n] for n in names}
    for n, s in ordered.items():
        if not torch.isfinite(s).all() or (s < 0).any():
            raise ValueError(f"saliency scores of '{n}' must be finite and non-negative")
    total = sum(s.numel() for s in ordered.values())
    k = min(total, max(1, round(ratio * total)))
    threshold, ties_left = _kth_largest_key(ordered, k)
    masks = {}
    for n, s in ordered.items():
        keys = _keys(s)
        mask = keys > threshold
        if ties_left > 0:
            tied = keys == threshold
            take = tied & (tied.cumsum(0, dtype=torch.int32) <= ties_left)
            ties_left -= int(take.sum())
            mask |= take
        masks[n] = mask.view(s.shape)
    return masks


@dataclass
class SaliencyMask:
    """Bool masks over parameters, with how they were chosen."""

    masks: dict[str, torch.Tensor]
    ratio: float
    scope: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def selected(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    @property
    def total(self) -> int:
        return int(sum(m.numel() for m in self.masks.values()))

    @property
    def fraction(self) -> float:
        return self.selected / max(1, self.total)


def compute_saliency_mask(
    denoiser: torch.nn.Module,
    forget_data: Iterable,
    loss_fn: Callable[[object], torch.Tensor],
    ratio: float = 0.5,
    scope: str = "all",
    reduce_grads: Callable[[torch.Tensor], torch.Tensor] | None = None,
    presets: Mapping[str, str] = SCOPES,
) -> SaliencyMask:
    """SalUn's mask (Fan et al. 2024, Eq. 6): the top `ratio` of |accumulated forget gradients|.

    Args:
        denoiser: the model whose weights are scored (a UNet or a transformer).
        forget_data: batches of forget data, each passed to `loss_fn`.
        loss_fn: the CFG-guided forgetting loss of one batch (see `objectives.cfg_guided_loss`).
        ratio: fraction of in-scope weights to keep, in (0, 1].
        scope: a preset of `presets` or a regex over parameter names.
        reduce_grads: optional cross-process sum of gradients.
        presets: the model adapter's scope presets.
    """
    params = parameters_in_scope(denoiser, scope, presets)
    scores = saliency_scores(denoiser, params, forget_data, loss_fn, reduce_grads)
    masks = select_top_ratio(scores, ratio)
    return SaliencyMask(masks=masks, ratio=ratio, scope=scope)
