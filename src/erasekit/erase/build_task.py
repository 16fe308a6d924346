"""The task of one erase, for either family, beside the tasks themselves: what to forget, the data it is
forgotten with, and a description of the concept for the record."""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..errors import ConfigError
from ..pipelines.adapters import adapter_for
from ..pipelines.digits import load_digits_16
from ..pipelines.inference import place
from .class_data import ClassDataConfig, load_class_data
from .membership import pick_samples
from .tasks import ClassConditionalTask, ConditionTask, SampleTask, farthest_anchor
from .text import TextConceptConfig, build_text_task

logger = logging.getLogger(__name__)


def build_task(base, denoiser, method_config, data: ClassDataConfig, concept: TextConceptConfig, seed: int,
               device, dtype, base_fingerprint: str, images: bool = True) -> tuple[ConditionTask, dict[str, Any]]:
    """The family's task and a description of the concept. `images=False` (a data-free method) loads and
    generates no image; text-to-image data are generated on `device` in `dtype`."""
    if adapter_for(base).family == "class-conditional":
        return _class_task(base, method_config, data, seed, images)
    return _text_task(base, denoiser, method_config, concept, seed, device, dtype, base_fingerprint, images)


def _class_task(base, method_config, data: ClassDataConfig, seed: int, images: bool):
    adapter = adapter_for(base)
    if data.forget_samples is not None:
        task, _ = sample_task(data, seed, base)
        return task, {"name": f"{len(task.forget_c)} training images ({data.forget_samples:.0%}, seed "
                              f"{data.forget_samples_seed})", "forget_samples": data.forget_samples,
                      "forget_samples_seed": data.forget_samples_seed, "forget_index": task.forget_index.tolist()}
    forget = adapter.check_forget(data.forget)
    target = getattr(method_config, "target_label", None)
    if target is not None and (target in forget or not 0 <= target < adapter.num_classes):
        raise ConfigError(f"'target_label' is {target} but must be a kept class in 0..{adapter.num_classes - 1}")
    if images:
        x, labels = load_class_data(data.data, data.data_samples_per_class, seed, base)
    else:  # a data-free method: no image is loaded or generated
        x, labels = torch.empty(0, *adapter.sample_shape()), torch.empty(0, dtype=torch.long)
    task = ClassConditionalTask(adapter, adapter.training_scheduler(), x, labels, forget, target,
                                getattr(method_config, "remap", "random"))
    # remap_classes: the labels a forget sample may be remapped to (with remap: farthest, the one chosen)
    return task, {"name": f"classes {forget}", "forget_classes": forget, "remap_classes": task.anchors.tolist()}


def _text_task(base, denoiser, method_config, concept: TextConceptConfig, seed: int, device, dtype,
               base_fingerprint: str, images: bool):
    if concept.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    task = build_text_task(base, concept, seed, device, dtype, base_fingerprint, images)
    place(base, "cpu")
    anchor_prompts = concept.anchor_prompts
    if getattr(method_config, "remap", "random") == "farthest":
        anchor_prompts = [farthest_anchor(task)]
        logger.info(f"remap: farthest: every forget sample is remapped to '{anchor_prompts[0]}'")
    return task, {"name": ", ".join(concept.forget_prompts), "forget_prompts": concept.forget_prompts,
                  "anchor_prompts": anchor_prompts, "retain_prompts": concept.retain_prompts or concept.anchor_prompts}


def sample_task(data: ClassDataConfig, seed: int, base) -> tuple[SampleTask, tuple[torch.Tensor, torch.Tensor]]:
    """Sample unlearning: the task (forget images picked from the digits training split by
    `forget_samples_seed`) and the held-out test split (images, labels)."""
    adapter = adapter_for(base)
    images, labels = load_class_data(data.data, data.data_samples_per_class, seed, base)
    index = pick_samples(len(labels), data.forget_samples, data.forget_samples_seed)
    split = load_digits_16()
    return SampleTask(adapter, adapter.training_scheduler(), images, labels, index), (split.test_images,
                                                                                     split.test_labels)
