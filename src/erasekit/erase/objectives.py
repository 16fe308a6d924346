"""Diffusion losses used for saliency and erasure, as pure functions of a `predict` callable.

`predict(z_t, t, cond) -> Tensor` hides how a model family is conditioned (class labels, text
embeddings) and `NoisyBatch` what it regresses (noise, velocity, sample, flow); the losses are the same
for every family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..pipelines.adapters import NoisyBatch

Predict = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


def concat_cond(a: Any, b: Any) -> Any:
    """Concatenate two conditionings along the batch: tensors, or dicts of tensors (SDXL)."""
    if isinstance(a, dict):
        return {k: concat_cond(a[k], b[k]) for k in a}
    return torch.cat([a, b])


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean squared error in float32, whatever the prediction's dtype."""
    return F.mse_loss(pred.float(), target.float())


def diffusion_loss(predict: Predict, noisy: NoisyBatch, cond: Any) -> torch.Tensor:
    """The ordinary denoising loss `||target - f(z_t | c)||^2` (Ho et al. 2020, Eq. 14)."""
    return mse(predict(noisy.z_t, noisy.t, cond), noisy.target)


def cfg_guided_loss(predict: Predict, noisy: NoisyBatch, cond: Any, null_cond: Any, w: float) -> torch.Tensor:
    """SalUn's forgetting loss with classifier-free guidance (Fan et al. 2024, Eq. 5 and App. B):
    `||target - ((1 + w) f(z_t | c_f) - w f(z_t | null))||^2`, both halves in one call."""
    z2 = torch.cat([noisy.z_t, noisy.z_t])
    t2 = torch.cat([noisy.t, noisy.t])
    cond_pred, null_pred = predict(z2, t2, concat_cond(cond, null_cond)).chunk(2)
    return mse((1 + w) * cond_pred - w * null_pred, noisy.target)


def remap_loss(predict: Predict, noisy: NoisyBatch, cond: Any, anchor_cond: Any) -> torch.Tensor:
    """Random-label remapping (Fan et al. 2024, Eq. 7): pull `f(z_t | c_f)` to `stopgrad(f(z_t | c'))`."""
    with torch.no_grad():
        anchor = predict(noisy.z_t, noisy.t, anchor_cond).detach()
    return mse(predict(noisy.z_t, noisy.t, cond), anchor)
