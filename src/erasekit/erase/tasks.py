"""What erasure trains on: forget and retain samples with integer condition ids, and a model adapter.

Conditioning is an integer id per sample. For class-conditional models the id is the class label; for
text-to-image models it indexes a table of prompt conditions computed once by the frozen encoder(s).
The adapter (erasekit.pipelines.adapters) turns ids into the denoiser's inputs and draws noise as the
model was trained (DDPM or flow matching). Methods and the trainer only see this interface, so every
family shares one saliency routine, one set of objectives and one training loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..pipelines.adapters import Adapter, NoisyBatch, adapter_for
from ..pipelines.rows import replaced_rows


@dataclass
class Batch:
    x0: torch.Tensor
    cond: torch.Tensor
    index: torch.Tensor | None = None  # positions in the split drawn from, where a draw has them
    own_cond: torch.Tensor | None = None  # the samples' own conditions, where found ones replaced some

    @property
    def concept_cond(self) -> torch.Tensor:
        """Each sample's own condition (the concept's label or prompt), whatever it carries for training."""
        return self.cond if self.own_cond is None else self.own_cond


class ConditionTask:
    """Forget and retain sets of (clean sample, condition id), with anchor ids for remapping.

    Args:
        adapter: the model family's adapter (noising, conditioning, prediction, scopes).
        scheduler: the training noise scheduler (from `adapter.training_scheduler()`).
        forget_x, forget_c: forget samples in the denoiser's input space and their condition ids.
        retain_x, retain_c: retain samples and their condition ids.
        anchors: ids that a forget sample may be remapped to (drawn uniformly per sample).
        null: the id of the unconditional branch.
        table: per-id condition tensors (text models); None when the id itself is the condition.
        prompt_ids: text models: the ids of the "forget", "anchor" and "retain" prompts (for edits
            that work on the conditions alone, such as UCE).
        sample_shape: the shape of one sample in the denoiser's input space (needed when the task holds
            no images, e.g. for mnemonic codes); by default that of the first image.
        prompt_table: text models: the prompt of each condition id.
    """

    def __init__(self, adapter: Adapter, scheduler, forget_x, forget_c, retain_x, retain_c, anchors: Sequence[int],
                 null: int, table: dict[str, torch.Tensor] | None = None,
                 prompt_ids: dict[str, list[int]] | None = None, sample_shape: Sequence[int] | None = None,
                 prompt_table: Sequence[str] | None = None):
        if len(anchors) == 0:
            raise ValueError("no anchor condition to remap the forget concept to")
        self.adapter, self.scheduler = adapter, scheduler
        self.forget_x, self.forget_c = forget_x, forget_c
        self.retain_x, self.retain_c = retain_x, retain_c
        self.anchors = torch.as_tensor(list(anchors), dtype=torch.long)
        self.null = null
        self.table = table
        self.prompt_ids = prompt_ids or {}
        self.prompt_table = list(prompt_table) if prompt_table is not None else None
        held = forget_x if len(forget_x) else retain_x
        self.sample_shape = tuple(sample_shape) if sample_shape is not None else tuple(held.shape[1:])
        self.adversary_ids: list[int] = []  # conditions an attack found (`add_adversary`)
        self.adversary_rows: list[torch.Tensor] = []  # class-conditional: the found class-embedding rows
        self.adversarial_share = 0.0

    def condition_ids(self, side: str) -> list[int]:
        """The condition ids of the "forget" or "retain" side: the forget prompts or the retain prompts."""
        return list(self.prompt_ids[side])

    @property
    def scopes(self) -> dict[str, str]:
        return self.adapter.scopes

    def conditions(self, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.table is None:
            return {"class_labels": cond}
        return {k: v.to(cond.device)[cond] for k, v in self.table.items()}

    def predict(self, denoiser, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.adapter.predict(denoiser, z_t, t, self.conditions(cond))

    def noisy(self, x0: torch.Tensor, generator: torch.Generator, levels: torch.Tensor | None = None) -> NoisyBatch:
        """Noise `x0` at random timesteps as the model family was trained (or at the noise `levels` in
        [0, 1) given), with its target."""
        return self.adapter.noise_and_target(self.scheduler, x0, generator, levels)

    @staticmethod
    def _draw(x: torch.Tensor, c: torch.Tensor, n: int, generator: torch.Generator, device) -> Batch:
        if len(c) == 0:
            raise ValueError("no samples in this split; check the forget/retain concept and the data")
        idx = torch.randint(0, len(c), (n,), generator=generator)
        return Batch(x[idx].to(device), c[idx].to(device), idx)

    def forget_batch(self, n: int, generator: torch.Generator, device="cpu") -> Batch:
        """`n` forget samples; once an attack has found conditions (`add_adversary`), the first
        `adversarial_share` of them carry one of those instead of their own (drawn uniformly)."""
        batch = self._draw(self.forget_x, self.forget_c, n, generator, device)
        k = round(self.adversarial_share * n) if self.adversary_ids else 0
        if k:
            pick = torch.randint(0, len(self.adversary_ids), (k,), generator=generator)
            batch.own_cond, batch.cond = batch.cond, batch.cond.clone()
            batch.cond[:k] = torch.as_tensor(self.adversary_ids, dtype=batch.cond.dtype)[pick].to(batch.cond.device)
        return batch

    def add_adversary(self, condition) -> int:
        """A condition an attack found for the forget concept, as a new condition id (which the forget batches
        then draw, see `forget_batch`). Text models: one row of every conditioning tensor (the encoders'
        output for the attack's prompt with its embeddings injected)."""
        if self.table is None:
            raise NotImplementedError(f"{type(self).__name__} takes no found conditions")
        rows = {k: v.detach().float().cpu().reshape(1, *self.table[k].shape[1:]) for k, v in condition.items()}
        if set(rows) != set(self.table):
            raise ValueError(f"a found condition has {sorted(rows)}; this task's conditions are {sorted(self.table)}")
        new = next(iter(self.table.values())).shape[0]
        self.table = {k: torch.cat([v, rows[k].to(v.dtype)]) for k, v in self.table.items()}
        if self.prompt_table is not None:
            self.prompt_table.append(f"<found condition {len(self.adversary_ids) + 1}>")
        self.adversary_ids.append(new)
        return new

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


class Sampler:
    """The trainer's draws for one micro-step: batches, noise and condition draws from its generator, on its
    device. A method asks for what it needs, in its own order; it never holds a generator itself."""

    def __init__(self, task: ConditionTask, generator: torch.Generator, device):
        self.task, self.generator, self.device = task, generator, device

    def forget(self, n: int) -> Batch:
        return self.task.forget_batch(n, self.generator, self.device)

    def retain(self, n: int) -> Batch:
        return self.task.retain_batch(n, self.generator, self.device)

    def noisy(self, x0: torch.Tensor, max_level: float | None = None) -> NoisyBatch:
        """`x0` noised at random timesteps as the family was trained, or (`max_level`) at noise levels drawn
        uniformly from [0, max_level)."""
        if max_level is None:
            return self.task.noisy(x0, self.generator)
        levels = torch.rand(x0.shape[0], generator=self.generator) * max_level
        return self.task.noisy(x0, self.generator, levels)

    def anchor(self, cond: torch.Tensor) -> torch.Tensor:
        return self.task.anchor_cond(cond, self.generator)

    def drop(self, cond: torch.Tensor, p: float) -> torch.Tensor:
        return self.task.drop_cond(cond, p, self.generator)


class ClassConditionalTask(ConditionTask):
    """Class labels as condition ids; forget classes are remapped to random kept classes.

    Args:
        adapter: the class-conditional adapter of the pipeline.
        scheduler: the training noise scheduler.
        images, labels: clean images in the model's input space and their classes.
        forget: class ids to erase.
        target_label: remap every forget sample to this class instead of a random kept class.
        remap: "random" (SalUn: a kept class drawn per sample) or "farthest" (the one kept class whose
            mean image is farthest from the forget classes' mean image); `target_label` overrides both.
    """

    def __init__(self, adapter, scheduler, images: torch.Tensor, labels: torch.Tensor, forget: Sequence[int],
                 target_label: int | None = None, remap: str = "random"):
        num_classes = adapter.num_classes
        self.forget = sorted({int(c) for c in forget})
        kept = [c for c in range(num_classes) if c not in self.forget]
        is_forget = torch.isin(labels, torch.tensor(self.forget, dtype=labels.dtype))
        if target_label is not None:
            anchors = [target_label]
        elif remap == "farthest":
            anchors = [farthest_class(images, labels, self.forget, kept)]
        else:
            anchors = kept
        self.kept = kept
        self.forget_index = torch.nonzero(is_forget).squeeze(1)  # positions in `images` (training-loss records)
        self.data_count = len(labels)
        super().__init__(adapter, scheduler, images[is_forget], labels[is_forget], images[~is_forget],
                         labels[~is_forget], anchors, null=num_classes, sample_shape=adapter.sample_shape())

    def condition_ids(self, side: str) -> list[int]:
        """The forget classes, or the kept classes ("retain")."""
        return list(self.forget if side == "forget" else self.kept)

    def add_adversary(self, condition: torch.Tensor) -> int:
        """A class-embedding row an attack found (the output of `class_embedding` that stands for a label),
        as the id after the null label and those found before."""
        self.adversary_rows.append(condition.detach().float().reshape(-1).cpu())
        self.adversary_ids.append(self.null + len(self.adversary_rows))
        return self.adversary_ids[-1]

    def predict(self, denoiser, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if not self.adversary_ids or not bool((cond > self.null).any()):
            return super().predict(denoiser, z_t, t, cond)
        layer = getattr(denoiser, "module", denoiser).class_embedding  # under DDP, the wrapped module's
        with found_rows(layer, self.null, torch.stack(self.adversary_rows)):
            return super().predict(denoiser, z_t, t, cond)

    @classmethod
    def for_pipeline(cls, pipe, images, labels, forget, target_label=None, remap="random") -> ClassConditionalTask:
        adapter = adapter_for(pipe)
        return cls(adapter, adapter.training_scheduler(), images, labels, forget, target_label, remap)


class SampleTask(ClassConditionalTask):
    """Sample unlearning on a class-conditional model: the forget set is the images at `forget_index` (of
    every class), the retain set all the others; a forget image is remapped to a random class other
    than its own, drawn uniformly per sample."""

    def __init__(self, adapter, scheduler, images: torch.Tensor, labels: torch.Tensor, forget_index: torch.Tensor):
        num_classes = adapter.num_classes
        is_forget = torch.zeros(len(labels), dtype=torch.bool)
        is_forget[forget_index] = True
        self.forget_index = forget_index
        self.data_count = len(labels)
        self.forget = sorted({int(c) for c in labels[is_forget]})
        self.kept = list(range(num_classes))
        ConditionTask.__init__(self, adapter, scheduler, images[is_forget], labels[is_forget], images[~is_forget],
                               labels[~is_forget], self.kept, null=num_classes, sample_shape=adapter.sample_shape())

    def anchor_cond(self, cond: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        k = len(self.kept)
        shift = torch.randint(1, k, (cond.shape[0],), generator=generator).to(cond.device)
        return (cond + shift) % k


def found_rows(layer: torch.nn.Module, null: int, rows: torch.Tensor):
    """Inside, the embedding `layer` reads id `null + 1 + j` as the row `rows[j]` (its output, trained through
    like any other input) and every other id as it is."""
    return replaced_rows(layer, lambda ids: torch.where(ids > null, ids - null - 1, -1), rows, stand_in=null)


def farthest_class(images: torch.Tensor, labels: torch.Tensor, forget: Sequence[int], kept: Sequence[int]) -> int:
    """The kept class whose mean image is farthest (L2) from the mean image of the forget classes.

    Random-label remapping regresses `f(z|c_f)` on the average of the kept classes' predictions; where
    that average looks like the forget class (a blurred digit reads as an 8), the class survives. One
    distant anchor gives a sharp, different target. Ties go to the lower class id.
    """
    flat = images.flatten(1).double()
    forget_mean = flat[torch.isin(labels, torch.tensor(list(forget), dtype=labels.dtype))].mean(0)
    present = [c for c in kept if (labels == c).any()]
    if not present:
        raise ValueError("no kept class has data to remap to")
    distance = [float((flat[labels == c].mean(0) - forget_mean).norm()) for c in present]
    return present[max(range(len(present)), key=lambda i: (distance[i], -present[i]))]


def farthest_anchor(task: ConditionTask) -> str:
    """Text-to-image `remap: farthest`: keep, of the task's anchor prompts, only the one whose images
    (its retain samples, in the denoiser's input space) have the mean farthest from the forget
    samples' mean, as `farthest_class` does for labels, and return that prompt."""

    anchors = [int(a) for a in task.anchors]
    if not any((task.retain_c == a).any() for a in anchors) or len(task.forget_c) == 0:
        raise ConfigError("'remap: farthest' picks the anchor prompt whose images are farthest from the forget "
                          "images, but the anchors have no images; leave 'retain_prompts' empty (the anchors are "
                          "then the retain data) or use remap: random")
    images = torch.cat([task.forget_x, task.retain_x])
    labels = torch.cat([task.forget_c, task.retain_c])
    chosen = farthest_class(images, labels, sorted({int(c) for c in task.forget_c}), anchors)
    task.anchors = torch.tensor([chosen], dtype=torch.long)
    return task.prompt_table[chosen]
