"""Judge a digits text-to-image model: generate from digit prompts and classify with the digits CNN."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..pipelines.digits import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, generated_digits
from .classifier import classify, load_classifier


def digit_prompt_accuracy(pipe, digits: Sequence[int], templates: Sequence[str], n: int = 10, seed: int = 0,
                          guidance: float = 4.0, steps: int = 30, judge=None) -> dict[int, float]:
    """Share of images generated for each digit's prompts that the judge labels as that digit.

    Image i of prompt j for digit d uses seed `seed + 1000 d + 100 j + i`, the same for every model.
    """
    judge = judge or load_classifier("bundled:digits-classifier")
    pipe.set_progress_bar_config(disable=True)
    images, labels = generated_digits(pipe, digits, templates, n, seed, steps, guidance)
    preds, _ = classify(judge, images)
    return {d: float((preds[labels == d] == d).float().mean()) for d in digits}


def digits_t2i_metrics(pipe, forget_digit: int, n: int = 10, seed: int = 0) -> dict[str, float]:
    """UA on the forget digit's training and held-out prompts; accuracy on the other digits."""
    judge = load_classifier("bundled:digits-classifier")
    others = [d for d in range(10) if d != forget_digit]
    train = digit_prompt_accuracy(pipe, [forget_digit], TRAIN_TEMPLATES, n, seed, judge=judge)
    held = digit_prompt_accuracy(pipe, [forget_digit], HELD_OUT_TEMPLATES, n, seed, judge=judge)
    kept = digit_prompt_accuracy(pipe, others, TRAIN_TEMPLATES[:2] + HELD_OUT_TEMPLATES[:1], n, seed, judge=judge)
    return {
        "UA_train_prompts": 1 - train[forget_digit],
        "UA_paraphrases": 1 - held[forget_digit],
        "other_digits_accuracy": float(torch.tensor(list(kept.values())).mean()),
        "per_digit_accuracy": {**kept, forget_digit: train[forget_digit]},
    }
