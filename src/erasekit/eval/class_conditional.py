"""Evaluate a class-conditional model: generate N samples per class with fixed seeds and classify them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..config import check
from ..pipelines.pipeline_class_conditional import ClassConditionalPipeline, per_sample_generators
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


def sample_seeds(classes: Sequence[int], n: int, base_seed: int) -> tuple[torch.Tensor, list[int]]:
    labels = torch.tensor([c for c in classes for _ in range(n)])
    seeds = [base_seed + c * n + i for c in classes for i in range(n)]
    return labels, seeds


@torch.no_grad()
def generate_class_samples(pipe: ClassConditionalPipeline, config: ClassEvalConfig,
                           classes: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] and their intended labels; each image depends only on its class and seed."""
    classes = list(range(pipe.num_classes)) if classes is None else list(classes)
    labels, seeds = sample_seeds(classes, config.samples_per_class, config.eval_seed)
    chunks = []
    for start in range(0, len(seeds), config.eval_batch_size):
        stop = start + config.eval_batch_size
        out = pipe(
            labels[start:stop].tolist(),
            num_inference_steps=config.num_inference_steps,
            guidance_scale=config.guidance_scale,
            generator=per_sample_generators(seeds[start:stop]),
            output_type="pt",
        ).images
        chunks.append(out.cpu() * 2 - 1)
    return torch.cat(chunks), labels


def evaluate_class_conditional(
    pipe: ClassConditionalPipeline,
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
