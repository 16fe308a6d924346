"""Diffusion losses used for saliency and erasure, as pure functions of a `predict` callable.

`predict(z_t, t, cond) -> Tensor` hides how a model family is conditioned (class labels for
class-conditional UNets, text embeddings for Stable Diffusion); the losses are the same for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

Predict = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


@dataclass
class NoisyBatch:
    """`z_t = add_noise(x0, noise, t)` and the model's regression target at `t`."""

    z_t: torch.Tensor
    t: torch.Tensor
    target: torch.Tensor


def add_noise(scheduler, x0: torch.Tensor, generator: torch.Generator) -> NoisyBatch:
    """Draw `t ~ U{0..T-1}` and Gaussian noise from `generator`, and form the training target.

    The target follows `scheduler.config.prediction_type`: epsilon, v_prediction or sample.
    """
    n = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator).to(x0.device)
    z_t = scheduler.add_noise(x0, noise, t)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(x0, noise, t)
    elif kind == "sample":
        target = x0
    else:
        raise ValueError(f"unsupported prediction_type {kind!r}")
    return NoisyBatch(z_t, t, target)


def concat_cond(a: Any, b: Any) -> Any:
    """Concatenate two conditionings along the batch: tensors, or dicts of tensors (SDXL)."""
    if isinstance(a, dict):
        return {k: concat_cond(a[k], b[k]) for k in a}
    return torch.cat([a, b])


def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), target.float())


def diffusion_loss(predict: Predict, noisy: NoisyBatch, cond: Any) -> torch.Tensor:
    """The ordinary denoising loss `||target - f(z_t | c)||^2` (Ho et al. 2020, Eq. 14)."""
    return _mse(predict(noisy.z_t, noisy.t, cond), noisy.target)


def cfg_guided_loss(predict: Predict, noisy: NoisyBatch, cond: Any, null_cond: Any, w: float) -> torch.Tensor:
    """SalUn's forgetting loss with classifier-free guidance (Fan et al. 2024, Eq. 5 and App. B):
    `||target - ((1 + w) f(z_t | c_f) - w f(z_t | null))||^2`, both halves in one call."""
    z2 = torch.cat([noisy.z_t, noisy.z_t])
    t2 = torch.cat([noisy.t, noisy.t])
    cond_pred, null_pred = predict(z2, t2, concat_cond(cond, null_cond)).chunk(2)
    return _mse((1 + w) * cond_pred - w * null_pred, noisy.target)


def remap_loss(predict: Predict, noisy: NoisyBatch, cond: Any, anchor_cond: Any) -> torch.Tensor:
    """Random-label remapping (Fan et al. 2024, Eq. 7): pull `f(z_t | c_f)` to `stopgrad(f(z_t | c'))`."""
    with torch.no_grad():
        anchor = predict(noisy.z_t, noisy.t, anchor_cond).detach()
    return _mse(predict(noisy.z_t, noisy.t, cond), anchor)
