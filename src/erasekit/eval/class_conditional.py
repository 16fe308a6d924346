"""Evaluate a class-conditional model: generate N samples per class with fixed seeds and classify them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..config import check
from ..pipelines.generation import class_seeds
from ..pipelines.generation import generate_class_samples as generate_class_samples_of
from .classifier import DigitsCNN, classify
from .metrics import frechet_distance, noisy_rate, per_class_accuracy, retain_accuracy, unlearning_accuracy


@dataclass
class ClassEvalConfig:
    """How generated samples are drawn and judged."""

    samples_per_class: int = field(default=50, metadata={"help": "generated samples per class"})
    num_inference_steps: int = field(default=50, metadata={"help": "sampler steps"})
    guidance_scale: float = field(default=3.0, metadata={"help": "CFG scale g (1 = none)"})
    eval_seed: int = field(default=1234, metadata={"help": "sample i of class c uses seed eval_seed + c*N + i"})
    eval_batch_size: int = field(default=250, metadata={"help": "samples per pipeline call"})
    classifier: str = field(default="bundled:digits-classifier", metadata={"help": "classifier directory"})

    def __post_init__(self):
        check(self.samples_per_class >= 2, "samples_per_class", self.samples_per_class, ">= 2")
        check(self.num_inference_steps >= 1, "num_inference_steps", self.num_inference_steps, ">= 1")
        check(self.guidance_scale >= 1, "guidance_scale", self.guidance_scale, ">= 1")
        check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, ">= 1")


@dataclass
class ClassEvalResult:
    """Generated samples, their predicted labels and the metrics."""

    images: torch.Tensor
    labels: torch.Tensor
    preds: torch.Tensor
    metrics: dict[str, object]


def generate_class_samples(pipe, config: ClassEvalConfig,
                           classes: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] and their intended labels; each image depends only on its class and seed."""
    from ..pipelines.adapters import adapter_for

    classes = list(range(adapter_for(pipe).num_classes)) if classes is None else list(classes)
    labels, seeds = class_seeds(classes, config.samples_per_class, config.eval_seed)
    images = generate_class_samples_of(pipe, labels, seeds, config.num_inference_steps, config.guidance_scale,
                                       config.eval_batch_size)
    return images, labels


def evaluate_class_conditional(
    pipe,
    classifier: DigitsCNN,
    forget: Sequence[int],
    config: ClassEvalConfig,
    real_images: torch.Tensor,
    real_labels: torch.Tensor,
) -> ClassEvalResult:
    """Per-class accuracy, UA, RA, FD against real retain images, and the share of noisy samples."""
    images, labels = generate_class_samples(pipe, config)
    preds, feats = classify(classifier, images)
    retain = ~torch.isin(labels, torch.tensor(list(forget), dtype=labels.dtype))
    real_retain = ~torch.isin(real_labels, torch.tensor(list(forget), dtype=real_labels.dtype))
    _, real_feats = classify(classifier, real_images[real_retain])
    n_classes = pipe.num_classes
    metrics = {
        "per_class_accuracy": per_class_accuracy(preds, labels, n_classes),
        "UA": unlearning_accuracy(preds, labels, forget),
        "RA": retain_accuracy(preds, labels, forget, n_classes),
        "FD": frechet_distance(feats[retain], real_feats),
        "noisy_rate_retain": noisy_rate(images[retain], real_images),
        "forget_predicted_as": torch.bincount(
            preds[~retain], minlength=n_classes).tolist() if (~retain).any() else [],
    }
    return ClassEvalResult(images=images, labels=labels, preds=preds, metrics=metrics)
