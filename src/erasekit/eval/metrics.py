"""Metrics as pure functions of predictions, labels and features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def per_class_accuracy(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Share of samples of each intended class that the classifier labels as that class (nan if none)."""
    out = []
    for c in range(num_classes):
        hit = preds[labels == c] == c
        out.append(float(hit.float().mean()) if hit.numel() else float("nan"))
    return out


def unlearning_accuracy(preds: torch.Tensor, labels: torch.Tensor, forget: Sequence[int]) -> float:
    """UA: share of samples generated for the forget classes that are NOT classified as their class."""
    is_forget = torch.isin(labels, torch.as_tensor(list(forget), dtype=labels.dtype))
    if not is_forget.any():
        return float("nan")
    return float((preds[is_forget] != labels[is_forget]).float().mean())


def retain_accuracy(preds: torch.Tensor, labels: torch.Tensor, forget: Sequence[int], num_classes: int) -> float:
    """RA: mean per-class accuracy over the classes that are kept."""
    accs = per_class_accuracy(preds, labels, num_classes)
    kept = [a for c, a in enumerate(accs) if c not in set(forget) and not np.isnan(a)]
    return float(np.mean(kept)) if kept else float("nan")


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, Eq. 6).

    `tr sqrt(A B)` is computed as `tr sqrt(A^1/2 B A^1/2)` from eigenvalues, which stays real and
    stable when the covariances are singular (ReLU features often have dead dimensions).
    """
    a, b = feats_a.double().cpu().numpy(), feats_b.double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def paired_cosine(feats_a: torch.Tensor, feats_b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each pair (row i of a with row i of b): 1 means the pair's features agree."""
    a, b = feats_a.double(), feats_b.double()
    return torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)


def paired_abs_difference(images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
    """Mean absolute pixel difference of each pair of images (pixels in [0, 1])."""
    return (images_a.double() - images_b.double()).abs().flatten(1).mean(1)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per image."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


def noisy_rate(images: torch.Tensor, real_images: torch.Tensor, quantile: float = 0.99) -> float:
    """Share of images whose total variation exceeds the `quantile` of real images.

    Recognition accuracy alone misleads: mostly-noise samples are often still given the intended
    label (shared/FACTS.md), so reports pair accuracy with this quality signal.
    """
    limit = torch.quantile(total_variation(real_images.float()), quantile)
    return float((total_variation(images.float()) > limit).float().mean())


def binomial_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% by default)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (float(centre - half), float(centre + half))
