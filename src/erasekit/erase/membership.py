"""Sample unlearning: which training images to forget, and a loss-based membership-inference test.

In sample unlearning (the setting RUM was made for) the forget set is a random share of the training
images of every class, not a class. Success is judged against retraining without those images: the
unlearned model should treat them as a model that never saw them does. The attack here is the simplest
one: an image whose denoising loss is low was probably trained on. Its AUC separating forget images
from held-out test images is 0.5 where the two look alike to the model, above 0.5 where the model still
fits the forget images better; the retrained model's AUC is the target, and retain-vs-test AUC is the
model's own generalisation gap for comparison.
"""

from __future__ import annotations

import torch

from .memorization import branch_statistics

MIA_DRAWS = 16  # noise draws per image for the attack's losses
MIA_SEED = 7_000_000  # noise seed of the attack's losses, apart from training and proxy seeds


def pick_samples(count: int, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of `round(fraction * count)` (at least 1) of `count` training images, drawn by `seed`
    alone, so that the unlearned model and the retrained reference forget the same images."""
    size = min(count - 1, max(1, round(fraction * count)))
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def auc(members: torch.Tensor, nonmembers: torch.Tensor) -> float:
    """AUC of the attack "lower loss means member": P(loss of a member < loss of a non-member), ties 1/2."""
    m, n = members.double().reshape(-1, 1), nonmembers.double().reshape(1, -1)
    if m.numel() == 0 or n.numel() == 0:
        raise ValueError("the membership test needs members and non-members")
    return float(((m < n).double() + 0.5 * (m == n).double()).mean())


def membership_metrics(denoiser, task, test_x: torch.Tensor, test_c: torch.Tensor, draws: int | None = None,
                       seed: int = MIA_SEED) -> dict[str, float]:
    """Mean denoising losses (under each image's own label) of the forget images, as many retain images
    (a fixed draw) and the held-out test images, and the attack's AUC forget-vs-test and retain-vs-test.
    Every image keeps its noise from model to model (ids: forget, retain, test in that order)."""
    draws = draws or MIA_DRAWS
    probe = torch.randperm(len(task.retain_c), generator=torch.Generator().manual_seed(seed))[:len(test_c)]
    sets = {"forget": (task.forget_x, task.forget_c), "retain": (task.retain_x[probe], task.retain_c[probe]),
            "test": (test_x, test_c)}
    was_training = denoiser.training
    denoiser.eval()
    losses, offset = {}, 0
    for name, (x, c) in sets.items():
        ids = torch.arange(offset, offset + len(c))
        losses[name] = branch_statistics(denoiser, task, x, c, seed, draws, ids=ids, conditional_only=True)["conditional"]
        offset += 1_000_000
    denoiser.train(was_training)
    return {"mia_auc": auc(losses["forget"], losses["test"]), "mia_auc_retain": auc(losses["retain"], losses["test"]),
            **{f"loss_{name}": float(v.mean()) for name, v in losses.items()},
            "n_forget": len(task.forget_c), "n_test": len(test_c), "draws": draws}
