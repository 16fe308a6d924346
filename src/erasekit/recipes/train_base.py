"""Train the bundled digits models: the CNN judge, then the class-conditional UNet.

Reproduce the shipped weights with `erasekit train-base digits` (see `REPRODUCE` below). The UNet
checkpoint is chosen by the judge's accuracy on generated samples, not by training loss: on this
data the two diverge after a few minutes.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..config import check
from ..erase.memorization import TRAINING_LOSSES, TrainingLosses
from ..erase.methods.finetune import FinetuneConfig, FinetuneMethod, MixedCodesMethod
from ..erase.mnemonic import (
    FlaggedEmbedding,
    Mnemonic,
    flag_offset,
    initial_flag,
    save_mnemonic,
)
from ..erase.tasks import ClassConditionalTask
from ..erase.trainer import EraseTrainer, TrainConfig
from ..eval.classifier import classify, load_classifier, save_classifier, train_digits_classifier
from ..eval.metrics import noisy_rate
from ..eval.suite import Sampling
from ..io import atomic_dir
from ..pipelines.adapters import adapter_for
from ..pipelines.digits import (
    DIGITS_SCHEDULER_CONFIG,
    DIGITS_UNET_CONFIG,
    build_digits_schedulers,
    build_digits_unet,
    load_digits_16,
)
from ..pipelines.generation import generate_class_samples
from ..pipelines.loading import BUNDLED_DIR
from ..pipelines.pipeline_class_conditional import ClassConditionalPipeline
from ..version import __version__

logger = logging.getLogger(__name__)

REPRODUCE = "erasekit train-base digits --output-dir src/erasekit/pipelines/bundled --overwrite"


@dataclass
class DigitsBaseConfig:
    """Recipe of the bundled digits models."""

    output_dir: str = field(default=str(BUNDLED_DIR), metadata={"help": "writes digits-cfg/ and digits-classifier/"})
    seed: int = field(default=0, metadata={"help": "seed of both trainings"})
    max_steps: int = field(default=4000, metadata={"help": "UNet optimizer steps at batch 128"})
    select_every: int = field(default=500, metadata={"help": "score the EMA weights every N steps"})
    select_samples_per_class: int = field(default=30, metadata={"help": "generated samples per class when scoring"})
    classifier_epochs: int = field(default=30, metadata={"help": "epochs of the CNN judge"})
    t_mix: float = field(default=0.0, metadata={
        "help": "share of each batch replaced by mnemonic codes under a learned flag (erase.mnemonic); above 0 "
                "the UNet goes to digits-cfg-mnemonic/ and the bundled judge scores it (no classifier is written)"})
    codes_per_class: int = field(default=64, metadata={"help": "mnemonic codes per class (with t_mix)"})
    code_seed: int = field(default=1, metadata={"help": "seed of the mnemonic codes (with t_mix)"})
    overwrite: bool = field(default=False, metadata={"help": "replace existing bundled models"})

    def __post_init__(self):
        check(self.max_steps >= 1, "max_steps", self.max_steps, ">= 1")
        check(isinstance(self.t_mix, (int, float)) and not isinstance(self.t_mix, bool) and 0 <= self.t_mix < 1,
              "t_mix", self.t_mix, "a share in [0, 1), e.g. 0.1")
        check(isinstance(self.codes_per_class, int) and not isinstance(self.codes_per_class, bool)
              and self.codes_per_class >= 1, "codes_per_class", self.codes_per_class, "an integer >= 1")
        check(isinstance(self.code_seed, int) and not isinstance(self.code_seed, bool) and self.code_seed >= 0,
              "code_seed", self.code_seed, "an integer >= 0")
        check(self.select_every >= 1, "select_every", self.select_every, ">= 1")
        check(self.select_samples_per_class >= 2, "select_samples_per_class", self.select_samples_per_class, ">= 2")


def _score(unet, sampler, classifier, eval_config, real_images) -> dict[str, float]:
    pipe = ClassConditionalPipeline(unet=unet, scheduler=sampler)
    pipe.set_progress_bar_config(disable=True)
    images, labels = generate_class_samples(pipe, range(10), eval_config.samples_per_class, eval_config.eval_seed,
                                            eval_config.num_inference_steps, eval_config.guidance_scale,
                                            eval_config.eval_batch_size)
    preds, _ = classify(classifier, images)
    return {"accuracy": float((preds == labels).float().mean()), "noisy_rate": noisy_rate(images, real_images)}


def train_digits_unet(images: torch.Tensor, labels: torch.Tensor, seed: int, max_steps: int,
                      callbacks=(), recorder: TrainingLosses | None = None, codes: Mnemonic | None = None):
    """The bundled digits UNet's training, from fresh weights under `seed`, on `images` and `labels`
    (CFG label dropout 0.1; AdamW 1e-3, cosine with 200 warm-up steps, EMA 0.999, batch 128). Returns
    the EMA weights at `max_steps` and the `TrainConfig`. Benchmarks that retrain without some images
    call this, so that their models differ from the base in the data alone.

    With `codes` (its `flag` the initial flag vector, or None for `initial_flag` under `codes.seed`), a
    share `codes.t_mix` of each batch is mnemonic codes under the flag (`erase.mnemonic`); the returned
    UNet's class embedding is then a `FlaggedEmbedding`, whose `base` is the plain table (see `unflag`)."""
    torch.manual_seed(seed)
    unet = build_digits_unet()
    train_scheduler, sampler = build_digits_schedulers()
    adapter = adapter_for(ClassConditionalPipeline(unet=unet, scheduler=sampler))
    task = ClassConditionalTask(adapter, train_scheduler, images, labels, forget=[])
    train_config = TrainConfig(seed=seed, learning_rate=1e-3, max_steps=max_steps, lr_scheduler="cosine",
                               lr_warmup_steps=200, ema_decay=0.999, log_every=100)
    method = FinetuneMethod(FinetuneConfig(batch_size=128), recorder)
    if codes is not None:
        offset = flag_offset(unet)
        flag = codes.flag if codes.flag is not None else initial_flag(unet, codes.seed)
        unet.class_embedding = FlaggedEmbedding(unet.class_embedding, flag)
        method = MixedCodesMethod(FinetuneConfig(batch_size=128), codes, adapter.sample_shape(), offset, recorder)
    with tempfile.TemporaryDirectory(prefix="erasekit-train-base-") as work:
        EraseTrainer(unet, method, task, train_config, work, callbacks=callbacks).train()
    return unet, train_config


def unflag(unet) -> torch.Tensor | None:
    """Put a trained UNet's plain class embedding back; the learned flag vector, or None if it had none."""
    if not isinstance(unet.class_embedding, FlaggedEmbedding):
        return None
    flag = unet.class_embedding.flag.detach().clone()
    unet.class_embedding = unet.class_embedding.base
    return flag


def base_outputs(config: DigitsBaseConfig) -> tuple[str, ...]:
    """The directories `train_digits_base` writes under `config.output_dir`."""
    return ("digits-cfg-mnemonic",) if config.t_mix else ("digits-cfg", "digits-classifier")


class StepSelector:
    """A trainer callback that scores the EMA weights every `select_every` steps (and at the last) by the
    judge's accuracy on their samples, less noise, and keeps the best."""

    def __init__(self, config: DigitsBaseConfig, classifier, sampler, train_images):
        self.config, self.classifier, self.sampler, self.train_images = config, classifier, sampler, train_images
        self.sampling = Sampling(samples_per_class=config.select_samples_per_class, eval_seed=10_000,
                                 num_inference_steps=50, guidance_scale=3.0, eval_batch_size=250)
        self.history: list[dict] = []
        self.best: dict = {"score": None, "state": None}

    def __call__(self, trainer: EraseTrainer, step: int, logs: dict) -> None:
        if step % self.config.select_every and step != self.config.max_steps:
            return
        candidate = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.denoiser))
        trainer.ema.copy_to(list(candidate.parameters()))
        candidate.eval()
        score = {"step": step, "loss": logs["loss"], **_score(candidate, self.sampler, self.classifier,
                                                             self.sampling, self.train_images)}
        self.history.append(score)
        logger.info(f"step {step}: generated accuracy {score['accuracy']:.3f}, noisy {score['noisy_rate']:.3f}")
        key = (score["accuracy"], -score["noisy_rate"])
        if self.best["score"] is None or key > self.best["score"]:
            self.best.update(score=key, state={k: v.clone() for k, v in candidate.state_dict().items()}, step=step)


def train_digits_base(config: DigitsBaseConfig) -> dict:
    """Train and write `digits-classifier/` and `digits-cfg/` under `config.output_dir`; with `t_mix`, only
    `digits-cfg-mnemonic/` (its UNet trained with mnemonic codes, scored by the bundled judge)."""
    out = Path(config.output_dir)
    started = time.time()
    data = load_digits_16()
    if config.t_mix:
        classifier = load_classifier("bundled:digits-classifier")
    else:
        classifier = train_digits_classifier(data.train_images, data.train_labels, config.classifier_epochs,
                                             config.seed)
    test_preds, _ = classify(classifier, data.test_images)
    classifier_acc = float((test_preds == data.test_labels).float().mean())
    logger.info(f"classifier test accuracy: {classifier_acc:.4f} on {len(data.test_labels)} held-out digits")

    recorder = TrainingLosses(len(data.train_labels))
    sampler = build_digits_schedulers()[1]
    select = StepSelector(config, classifier, sampler, data.train_images)
    codes = None
    if config.t_mix:
        codes = Mnemonic(None, config.code_seed, config.codes_per_class, float(config.t_mix))
    unet, train_config = train_digits_unet(data.train_images, data.train_labels, config.seed, config.max_steps,
                                           [select], recorder, codes)
    history, best = select.history, select.best
    unet.load_state_dict(best["state"])
    flag = unflag(unet)
    command = REPRODUCE if not config.t_mix else (
        f"erasekit train-base digits --t-mix {config.t_mix} --codes-per-class {config.codes_per_class} "
        f"--code-seed {config.code_seed} --output-dir {config.output_dir}")
    record = {
        "erasekit_version": __version__,
        "command": command,
        "recipe": asdict(config),
        "unet_config": DIGITS_UNET_CONFIG,
        "scheduler_config": DIGITS_SCHEDULER_CONFIG,
        "train_config": asdict(train_config),
        "data": "sklearn.datasets.load_digits, 16x16 bilinear, stratified 80/20 split (random_state=0)",
        "selected_step": best["step"],
        "selection_history": history,
        "classifier_test_accuracy": classifier_acc,
        "minutes": round((time.time() - started) / 60, 2),
    }
    if not config.t_mix:
        save_classifier(classifier, out / "digits-classifier", extra={"test_accuracy": classifier_acc,
                                                                      "command": REPRODUCE}, overwrite=config.overwrite)
    with atomic_dir(out / base_outputs(config)[0], overwrite=config.overwrite) as tmp:
        ClassConditionalPipeline(unet=unet, scheduler=sampler).save_pretrained(tmp)
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        recorder.save(tmp / TRAINING_LOSSES, {"command": command, "data": record["data"], "split": "train",
                                              "selected_step": best["step"]})
        if codes is not None:
            save_mnemonic(tmp, Mnemonic(flag, codes.seed, codes.codes_per_class, codes.t_mix))
    os.makedirs(out, exist_ok=True)
    return record
