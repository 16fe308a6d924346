import math

import torch

from erasekit.eval.metrics import (
    binomial_interval,
    frechet_distance,
    noisy_rate,
    per_class_accuracy,
    retain_accuracy,
    unlearning_accuracy,
)


def test_ua_and_ra_on_hand_made_predictions():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 3, 5, 5, 1, 0, 2, 2])
    assert unlearning_accuracy(preds, labels, [0]) == 0.75
    assert per_class_accuracy(preds, labels, 3) == [0.25, 0.5, 1.0]
    assert retain_accuracy(preds, labels, [0], 3) == 0.75
    assert math.isnan(unlearning_accuracy(preds, labels, [7]))


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_shift():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(500, 4, generator=g)
    assert abs(frechet_distance(feats, feats)) < 1e-6
    shifted = feats + torch.tensor([3.0, 0, 0, 0])
    assert abs(frechet_distance(feats, shifted) - 9.0) < 1e-4


def test_noisy_rate_flags_noise_not_digits():
    g = torch.Generator().manual_seed(0)
    smooth = torch.linspace(-1, 1, 16).repeat(50, 1, 16, 1)
    noise = torch.rand(50, 1, 16, 16, generator=g) * 2 - 1
    assert noisy_rate(smooth, smooth) == 0.0
    assert noisy_rate(noise, smooth) == 1.0


def test_wilson_interval_contains_the_rate():
    low, high = binomial_interval(5, 100)
    assert low < 0.05 < high and 0 <= low and high < 0.12
