"""`erasure.json`: how an erased model was made (base, concept, method, configs, seed, precision, versions
and metrics), built from the run's parts."""

from __future__ import annotations

from typing import Any

import accelerate
import diffusers
import torch
import transformers

from .erase.masks import MASK_FILE_KEYS
from .erase.methods import get_method
from .io import portable
from .pipelines.inference import DTYPES, dtype_name, safety_checker_record
from .pipelines.loading import source_of
from .pipelines.saving import base_name, describe_base
from .recipe import Configs
from .version import __version__


def versions() -> dict[str, str]:
    return {"erasekit": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__}


def mask_record(mask) -> dict[str, Any] | None:
    if mask is None:
        return None
    return {**{k: v for k, v in mask.metadata.items() if k not in MASK_FILE_KEYS}, "ratio": mask.ratio,
            "selected": mask.selected, "total": mask.total, "scope": mask.scope}


def erasure_record(cfg: Configs, base, adapter, denoiser, method, concept: dict, delta: dict, base_fingerprint: str,
                   stored: str, accelerator, batch: dict | None, metrics: dict, minutes: float) -> dict[str, Any]:
    """The record of one erase (`stored`: the base denoiser's stored dtype name; `delta`: the saved delta's
    metadata; `batch`: the effective batch)."""
    run, source = cfg.run, source_of(base)
    return {
        "erasekit_version": __version__,
        "base_model": base_name(run.pretrained_model_name_or_path),
        "base": describe_base(run.pretrained_model_name_or_path, source, delta.get("base_content_fingerprint")),
        "base_fingerprint": base_fingerprint,
        "erased_fingerprint": delta["erased_fingerprint"],
        "concept": concept,
        "method": run.method,
        "method_description": get_method(run.method).description,
        "config": portable(cfg.recorded("forget_prompts" not in concept)),
        "denoiser": {"attribute": adapter.denoiser_name, "class": type(denoiser).__name__,
                     "adapter": type(adapter).__name__},
        "seed": cfg.train.seed,
        "mask": mask_record(method.mask),
        "precision": {"mixed_precision": accelerator.mixed_precision, "master_weights": "float32",
                      "frozen_dtype": dtype_name(adapter.denoiser.dtype), "base_unet_dtype": stored,
                      "saved_unet_dtype": dtype_name(DTYPES[run.save_dtype]) if run.save_dtype else stored,
                      "variant": source.variant if source else run.variant, "file_sets": delta.get("file_sets")},
        "effective_batch": batch,
        "safety_checker": safety_checker_record(base),
        "versions": versions(),
        "metrics": metrics,
        "minutes": minutes,
    }
