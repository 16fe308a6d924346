"""Class-conditional metrics: UA, RA, per-class accuracy, FD and the noisy share against real data."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..pipelines.digits import load_digits_16
from .metrics import frechet_distance, noisy_rate, per_class_accuracy, retain_accuracy, unlearning_accuracy

REAL_DATA = "digits test split (360 images)"


def real_reference(judge, forget: Sequence[int]) -> dict:
    """Real kept-class images and their judge features: the reference of FD and of the noisy share."""

    real = load_digits_16()
    kept = ~torch.isin(real.test_labels, torch.tensor(list(forget), dtype=real.test_labels.dtype))
    _, feats = judge.predict(list(real.test_images[kept]))
    return {"images": real.test_images, "features": feats}


def class_metrics(images: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, feats: torch.Tensor,
                  forget: Sequence[int], num_classes: int, real: dict) -> dict:
    """Per-class accuracy, UA on the forget classes, RA on the rest, FD of the kept-class samples to
    real kept-class images in the judge's feature space, and the share of noisy kept-class samples."""
    retain = ~torch.isin(labels, torch.tensor(list(forget), dtype=labels.dtype))
    return {
        "per_class_accuracy": per_class_accuracy(preds, labels, num_classes),
        "UA": unlearning_accuracy(preds, labels, forget),
        "RA": retain_accuracy(preds, labels, forget, num_classes),
        "FD": frechet_distance(feats[retain], real["features"]),
        "noisy_rate_retain": noisy_rate(images[retain], real["images"]),
        "forget_predicted_as": torch.bincount(preds[~retain], minlength=num_classes).tolist()
        if (~retain).any() else [],
    }
