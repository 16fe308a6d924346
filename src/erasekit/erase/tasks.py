"""What a model family contributes to erasure: its data, its conditioning and how to call its UNet.

Methods and the trainer only see this interface, so class-conditional and text-to-image models
share one saliency routine, one set of objectives and one training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..pipelines.pipeline_class_conditional import null_label


@dataclass
class Batch:
    x0: torch.Tensor
    cond: Any


class ClassConditionalTask:
    """Forget/retain split of a labelled image set for a class-conditional UNet.

    Args:
        scheduler: the training noise scheduler (defines the prediction target).
        images: clean images in the model's input space, (N, C, H, W).
        labels: their class ids.
        forget: class ids to erase.
        num_classes: classes of the model; the null label is `num_classes`.
        target_label: remap every forget sample to this class instead of a random retain class.
    """

    def __init__(
        self,
        scheduler,
        images: torch.Tensor,
        labels: torch.Tensor,
        forget: Sequence[int],
        num_classes: int,
        target_label: int | None = None,
    ):
        self.scheduler = scheduler
        self.num_classes = num_classes
        self.null = num_classes
        self.forget = sorted(set(int(c) for c in forget))
        self.retain_classes = torch.tensor([c for c in range(num_classes) if c not in self.forget])
        self.target_label = target_label
        is_forget = torch.isin(labels, torch.tensor(self.forget, dtype=labels.dtype))
        self.forget_x, self.forget_y = images[is_forget], labels[is_forget]
        self.retain_x, self.retain_y = images[~is_forget], labels[~is_forget]

    @classmethod
    def for_unet(cls, unet, scheduler, images, labels, forget, target_label=None) -> ClassConditionalTask:
        return cls(scheduler, images, labels, forget, null_label(unet), target_label)

    def predict(self, unet, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return unet(z_t, t, class_labels=cond).sample

    def _draw(self, x: torch.Tensor, y: torch.Tensor, n: int, generator: torch.Generator, device) -> Batch:
        if len(y) == 0:
            raise ValueError("no images for this split; check the forget classes and the data")
        idx = torch.randint(0, len(y), (n,), generator=generator)
        return Batch(x[idx].to(device), y[idx].to(device))

    def forget_batch(self, n: int, generator: torch.Generator, device="cpu") -> Batch:
        return self._draw(self.forget_x, self.forget_y, n, generator, device)

    def retain_batch(self, n: int, generator: torch.Generator, device="cpu") -> Batch:
        return self._draw(self.retain_x, self.retain_y, n, generator, device)

    def forget_batches(self, batch_size: int, generator: torch.Generator, device="cpu") -> list[Batch]:
        """The whole forget set once, in a seeded order (for saliency)."""
        order = torch.randperm(len(self.forget_y), generator=generator)
        return [
            Batch(self.forget_x[idx].to(device), self.forget_y[idx].to(device))
            for idx in order.split(batch_size)
        ]

    def null_cond(self, like: torch.Tensor) -> torch.Tensor:
        return torch.full_like(like, self.null)

    def anchor_cond(self, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The remapping target c': a random retain class per sample, or the fixed target label."""
        if self.target_label is not None:
            return torch.full_like(cond, self.target_label)
        pick = torch.randint(0, len(self.retain_classes), (cond.shape[0],), generator=generator)
        return self.retain_classes[pick].to(cond.device)

    def drop_cond(self, cond: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        """CFG label dropout: replace each label by the null label with probability p."""
        drop = torch.rand(cond.shape[0], generator=generator).to(cond.device) < p
        return torch.where(drop, self.null_cond(cond), cond)
