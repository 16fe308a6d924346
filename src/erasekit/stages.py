"""The steps of `erase` between loading and saving: the staging directory, and the method's run (mask and
training, a RUM refinement, or a training-free edit) with the trainer under Accelerate."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from .adversarial import AdversarialRounds
from .erase.build_task import build_task
from .erase.masks import save_mask
from .erase.methods import Shard, get_method
from .erase.rum import refine
from .erase.trainer import CHECKPOINT_DIR, EraseTrainer, find_checkpoint
from .errors import ConfigError
from .io import check_output_free, staging_dir
from .pipelines.adapters import adapter_for
from .pipelines.inference import torch_dtype
from .recipe import Configs, EraseConfig

logger = logging.getLogger(__name__)


def resumed_step(staging: Path, train) -> int:
    """The step of the checkpoint a run resumes from, or 0 for a fresh run."""
    if not train.resume_from_checkpoint:
        return 0
    return int(find_checkpoint(staging, train.resume_from_checkpoint).name.split("-")[1])


def _resumable(staging: Path) -> bool:
    return any(re.fullmatch(r"checkpoint-\d+", p.name) for p in (staging / CHECKPOINT_DIR).glob("checkpoint-*"))


def prepare_staging(run: EraseConfig, train) -> Path:
    """The staging directory of `run.output_dir`. One left by an interrupted run without a finished
    checkpoint holds nothing to resume: it is removed, and the run starts afresh."""
    final = check_output_free(run.output_dir, run.overwrite, "output_dir")
    staging = staging_dir(final)
    if staging.exists() and not _resumable(staging):
        logger.info(f"an interrupted run of '{final}' left no checkpoint to resume; starting afresh")
        shutil.rmtree(staging, ignore_errors=True)  # every process may try; the first one removes it
    if train.resume_from_checkpoint == "latest" and not staging.exists():
        logger.info(f"nothing to resume for '{final}'; starting afresh")
        train.resume_from_checkpoint = None
    elif not train.resume_from_checkpoint and staging.exists():
        raise ConfigError(
            f"an interrupted run of '{final}' left checkpoints in {staging}; pass --resume-from-checkpoint latest "
            f"to continue it, or delete that directory to start afresh"
        )
    return staging


def shard_of(accelerator) -> Shard:
    """This process's shard of the saliency batches, with an all-reduce sum across processes."""
    if accelerator.num_processes == 1:
        return Shard()
    return Shard(accelerator.process_index, accelerator.num_processes,
                 lambda t: accelerator.reduce(t, reduction="sum"))


def effective_batch(cfg: Configs, accelerator) -> dict[str, int] | None:
    """Samples per optimizer step: processes x per-process batch x accumulation steps."""
    per_process = getattr(cfg.method, "batch_size", None)
    if per_process is None:
        return None
    total = accelerator.num_processes * per_process * cfg.train.gradient_accumulation_steps
    return {"processes": accelerator.num_processes, "per_process": per_process,
            "gradient_accumulation_steps": cfg.train.gradient_accumulation_steps, "total": total}


def _check_trained_on_data(cfg: Configs, method) -> None:
    """Sample forgetting and RUM stages unlearn training images: they need a trained method with data."""
    if method.edit is None and method.needs_images:
        return
    if cfg.data.forget_samples is not None:
        raise ConfigError(f"'forget_samples' unlearns training images, which needs a trained method with data; "
                          f"'{cfg.run.method}' is not one (use salun, rl, ga or retrain)")
    if cfg.refine.refine:
        raise ConfigError(f"'refine: {cfg.refine.refine}' unlearns forget samples in stages, which needs a trained "
                          f"method with data; '{cfg.run.method}' is not one (use salun, rl, esd or ga)")


def run_method(cfg: Configs, staging: Path, base, base_state: dict, base_fingerprint: str, accelerator):
    """Task, mask and training (or a training-free edit); on failure keep checkpoints for resume, else leave
    nothing behind. The trained weights are float32 master weights read from the stored ones. Returns the
    denoiser (on the host), the method, the concept, the last training logs and the RUM record."""
    adapter = adapter_for(base)
    denoiser = adapter.copy_denoiser(base_state)
    make_method = lambda: get_method(cfg.run.method).method(cfg.method)  # noqa: E731
    accelerator.wait_for_everyone()  # every rank has checked the output paths before any is created
    if accelerator.is_main_process:
        staging.mkdir(parents=True, exist_ok=True)
    try:
        method = make_method()
        method.model = cfg.run.pretrained_model_name_or_path
        _check_trained_on_data(cfg, method)
        with accelerator.main_process_first():  # the main process fills the data cache; the others read it
            task, concept = build_task(base, denoiser, cfg.method, cfg.data, cfg.concept, cfg.train.seed,
                                       accelerator.device, torch_dtype(accelerator.mixed_precision), base_fingerprint,
                                       method.needs_images)
        denoiser.to(accelerator.device)
        teacher = adapter.copy_denoiser(base_state).requires_grad_(False).to(accelerator.device) \
            if method.needs_teacher else None
        denoiser, method, last, refined = _fit(cfg, base, denoiser, method, make_method, task, concept, staging,
                                               accelerator, teacher, base_fingerprint)
    except BaseException:
        if not (staging / CHECKPOINT_DIR).is_dir() and accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return denoiser.to("cpu").eval(), method, concept, last, refined


def _fit(cfg: Configs, base, denoiser, method, make_method, task, concept: dict, staging: Path, accelerator, teacher,
         base_fingerprint: str) -> tuple[Any, Any, dict, dict | None]:
    """The method's work: RUM's stages (the mask saved is their union), or a mask then an edit or training."""
    refined = None
    if cfg.refine.refine:
        denoiser, method, refined = refine(denoiser, make_method, task, cfg.refine, cfg.train,
                                           cfg.run.pretrained_model_name_or_path, staging, accelerator,
                                           shard_of(accelerator), teacher)
        last = refined.pop("last")
    else:
        method.prepare(denoiser, task, torch.Generator().manual_seed(cfg.train.seed), shard_of(accelerator), teacher)
    if method.mask is not None and accelerator.is_main_process:
        save_mask(method.mask, staging / "mask.safetensors", concept=concept["name"], overwrite=True,
                  base_fingerprint=base_fingerprint)
    if refined is None and method.edit is not None:
        last = {"step": 0, **method.edit(denoiser, task)}
    elif refined is None:
        rounds = [AdversarialRounds(cfg.adversarial, base, task, concept, cfg.train.seed, staging, cfg.train.max_steps,
                                    accelerator.is_main_process, resumed_step(staging, cfg.train))
                  ] if cfg.adversarial.adversarial_rounds else []
        trainer = EraseTrainer(denoiser, method, task, cfg.train, staging, callbacks=rounds, accelerator=accelerator)
        last = trainer.train()
        denoiser = trainer.denoiser
    return denoiser, method, last, refined
