"""What a model family contributes to erasure: its data, its conditioning and how to call its UNet.

Conditioning is an integer id per sample. For class-conditional UNets the id is the class label;
for text-to-image UNets it indexes a table of prompt embeddings computed once by the frozen text
encoder(s). Methods and the trainer only see this interface, so both families share one saliency
routine, one set of objectives and one training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..pipelines.pipeline_class_conditional import null_label


@dataclass
class Batch:
    x0: torch.Tensor
    cond: torch.Tensor


class ConditionTask:
    """Forget and retain sets of (clean sample, condition id), with anchor ids for remapping.

    Args:
        scheduler: the training noise scheduler (defines the prediction target).
        forget_x, forget_c: forget samples in the UNet's input space and their condition ids.
        retain_x, retain_c: retain samples and their condition ids.
        anchors: ids that a forget sample may be remapped to (drawn uniformly per sample).
        null: the id of the unconditional branch.
    """

    def __init__(self, scheduler, forget_x, forget_c, retain_x, retain_c, anchors: Sequence[int], null: int):
        if len(anchors) == 0:
            raise ValueError("no anchor condition to remap the forget concept to")
        self.scheduler = scheduler
        self.forget_x, self.forget_c = forget_x, forget_c
        self.retain_x, self.retain_c = retain_x, retain_c
        self.anchors = torch.as_tensor(list(anchors), dtype=torch.long)
        self.null = null

    def predict(self, unet, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _draw(x: torch.Tensor, c: torch.Tensor, n: int, generator: torch.Generator, device) -> Batch:
        if len(c) == 0:
            raise ValueError("no samples in this split; check the forget/retain concept and the data")
        idx = torch.randint(0, len(c), (n,), generator=generator)
        return Batch(x[idx].to(device), c[idx].to(device))

    def forget_batch(self, n: int, generator: torch.Generator, device="cpu") -> Batch:
        return self._draw(self.forget_x, self.forget_c, n, generator, device)

    def retain_batch(self, n: int, generator: torch.Generator, device="cpu") -> Batch:
        return self._draw(self.retain_x, self.retain_c, n, generator, device)

    def forget_batches(self, batch_size: int, generator: torch.Generator, device="cpu") -> list[Batch]:
        """The whole forget set once, in a seeded order (for saliency)."""
        order = torch.randperm(len(self.forget_c), generator=generator)
        return [Batch(self.forget_x[i].to(device), self.forget_c[i].to(device)) for i in order.split(batch_size)]

    def null_cond(self, like: torch.Tensor) -> torch.Tensor:
        return torch.full_like(like, self.null)

    def anchor_cond(self, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The remapping target c': one anchor id per sample, drawn uniformly."""
        pick = torch.randint(0, len(self.anchors), (cond.shape[0],), generator=generator)
        return self.anchors[pick].to(cond.device)

    def drop_cond(self, cond: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
        """CFG condition dropout: replace each id by the null id with probability p."""
        drop = torch.rand(cond.shape[0], generator=generator).to(cond.device) < p
        return torch.where(drop, self.null_cond(cond), cond)


class ClassConditionalTask(ConditionTask):
    """Class labels as condition ids; forget classes are remapped to random kept classes.

    Args:
        scheduler: the training noise scheduler.
        images, labels: clean images in the model's input space and their classes.
        forget: class ids to erase.
        num_classes: classes of the model; the null label is `num_classes`.
        target_label: remap every forget sample to this class instead of a random kept class.
    """

    def __init__(self, scheduler, images: torch.Tensor, labels: torch.Tensor, forget: Sequence[int],
                 num_classes: int, target_label: int | None = None):
        self.forget = sorted({int(c) for c in forget})
        kept = [c for c in range(num_classes) if c not in self.forget]
        is_forget = torch.isin(labels, torch.tensor(self.forget, dtype=labels.dtype))
        super().__init__(scheduler, images[is_forget], labels[is_forget], images[~is_forget], labels[~is_forget],
                         [target_label] if target_label is not None else kept, null=num_classes)

    @classmethod
    def for_unet(cls, unet, scheduler, images, labels, forget, target_label=None) -> ClassConditionalTask:
        return cls(scheduler, images, labels, forget, null_label(unet), target_label)

    def predict(self, unet, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return unet(z_t, t, class_labels=cond).sample


class TextToImageTask(ConditionTask):
    """Prompt ids into precomputed text embeddings, for `UNet2DConditionModel` (SD 1.x/2.x and SDXL).

    Args:
        scheduler: the training noise scheduler.
        prompt_embeds: (P, L, D) encoder hidden states, one row per distinct prompt; row `null` is the
            unconditional embedding.
        pooled_embeds: (P, D') pooled embeddings for SDXL, else None.
        time_ids: (6,) SDXL size/crop conditioning, else None.
        forget_x, forget_c, retain_x, retain_c, anchors, null: as in `ConditionTask`; x are VAE latents.
    """

    def __init__(self, scheduler, prompt_embeds, forget_x, forget_c, retain_x, retain_c, anchors, null,
                 pooled_embeds=None, time_ids=None):
        super().__init__(scheduler, forget_x, forget_c, retain_x, retain_c, anchors, null)
        self.prompt_embeds = prompt_embeds
        self.pooled_embeds = pooled_embeds
        self.time_ids = time_ids

    def predict(self, unet, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        dtype = z_t.dtype
        hidden = self.prompt_embeds.to(z_t.device)[cond].to(dtype)
        added = None
        if self.pooled_embeds is not None:
            added = {
                "text_embeds": self.pooled_embeds.to(z_t.device)[cond].to(dtype),
                "time_ids": self.time_ids.to(z_t.device, dtype).expand(cond.shape[0], -1),
            }
        return unet(z_t, t, encoder_hidden_states=hidden, added_cond_kwargs=added).sample
