import math

import numpy as np
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


def test_collateral_pairs_images_and_reports_fd_only_with_enough_pairs():
    from PIL import Image

    from erasekit.eval.measure import collateral_metrics

    class Features:  # a stand-in judge: 3 features per image from its mean colour
        def image_features(self, images):
            return torch.from_numpy(np.stack([np.asarray(i, np.float32).mean((0, 1)) for i in images]))

    rng = np.random.default_rng(0)
    base = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(6)]
    few = collateral_metrics(base[:5], base[:5], {"clip": Features()})
    assert few["n"] == 5 and few["paired_pixel_mae"] == 0 and few["fd"] is None
    assert few["fd_skipped"] == "n = 5 pairs is below 2 x 3 feature dimensions"
    enough = collateral_metrics(base, base[::-1], {"clip": Features()})
    assert enough["n"] == 6 and enough["paired_pixel_mae"] > 0.1 and enough["fd"] is not None
