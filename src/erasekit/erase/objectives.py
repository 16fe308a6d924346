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


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    """Each row of `v` (B, K) projected (L2) onto the probability simplex (Duchi et al. 2008)."""
    k = v.shape[1]
    u, _ = torch.sort(v, dim=1, descending=True)
    cssv = u.cumsum(1) - 1
    index = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    rho = ((u - cssv / index) > 0).to(v.dtype).mul(index).argmax(1, keepdim=True)
    theta = cssv.gather(1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0)


def mixture_posterior(conditional: torch.Tensor, unconditional: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """A model's posterior over its K conditions at z_t, read from its own predictions.

    A CFG-trained model's unconditional prediction is the mixture of its conditional ones weighted by
    p(c | z_t) (the score of a mixture). Per sample, the simplex point whose mixture of `conditional`
    (K, B, ...) is nearest `unconditional` (B, ...) in least squares, by projected gradient descent in
    float64: (B, K), deterministic.
    """
    k, b = conditional.shape[:2]
    p = conditional.reshape(k, b, -1).transpose(0, 1).double()  # (B, K, D)
    y = unconditional.reshape(b, -1).double()
    gram = p @ p.transpose(1, 2)
    lin = (p @ y.unsqueeze(2)).squeeze(2)
    step = 1.0 / gram.diagonal(dim1=1, dim2=2).sum(1, keepdim=True).clamp_min(1e-12)  # 1 / trace >= 1 / L
    pi = torch.full((b, k), 1.0 / k, dtype=torch.float64, device=p.device)
    for _ in range(iters):
        grad = (gram @ pi.unsqueeze(2)).squeeze(2) - lin
        pi = project_to_simplex(pi - step * grad)
    return pi


def retain_mixture_target(conditional: torch.Tensor, unconditional: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The unconditional prediction of the data with the forget conditions removed: the conditional
    predictions of the kept conditions (`keep`, a (K,) bool) weighted by the model's posterior renormalised
    over them (uniform where the posterior puts no mass on any). `conditional` is (K, B, ...)."""
    pi = mixture_posterior(conditional, unconditional)[:, keep]
    mass = pi.sum(1, keepdim=True)
    pi = torch.where(mass > 1e-6, pi / mass.clamp_min(1e-12), torch.full_like(pi, 1.0 / pi.shape[1]))
    kept = conditional[keep].double()
    weights = pi.transpose(0, 1).reshape(kept.shape[:2] + (1,) * (kept.dim() - 2))
    return (weights * kept).sum(0).to(conditional.dtype)


def data_denoiser(z_t: torch.Tensor, a: torch.Tensor, s: torch.Tensor, data: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                   torch.Tensor]:
    """The optimal denoiser of a finite data set: `E[x0 | z_t]` when x0 is drawn uniformly from `data` (N, ...)
    and `z_t = a x0 + s noise` (a, s: one per sample), with the noise it implies, `(z_t - a E[x0 | z_t]) / s`.
    The posterior over the N points is a softmax of `-||z_t - a x_j||^2 / (2 s^2)`, in float64. Where one
    point dominates (low noise, or a z_t far from every point) the implied noise grows as 1 / s."""
    b = z_t.shape[0]
    z = z_t.reshape(b, -1).double()
    x = data.reshape(data.shape[0], -1).to(z.device, torch.float64)
    a, s = a.reshape(b, 1).double(), s.reshape(b, 1).double()
    d2 = (z * z).sum(1, keepdim=True) - 2 * a * (z @ x.T) + a * a * (x * x).sum(1)[None]
    weights = torch.softmax(-d2 / (2 * s * s), dim=1)
    x0 = weights @ x
    noise = (z - a * x0) / s
    return x0.reshape(z_t.shape), noise.reshape(z_t.shape)
