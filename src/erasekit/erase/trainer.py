"""The one training loop: Accelerate, masked gradients, accumulation, checkpoints, resume and logs."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from ..config import check
from ..errors import ConfigError, NonFiniteError
from ..io import discard_dir, write_text
from ..progress import Progress
from .optim import MaskedAdamW
from .tasks import Sampler

logger = logging.getLogger(__name__)

MIXED_PRECISION = ("no", "fp16", "bf16")
CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "logs.jsonl"


@dataclass
class TrainConfig:
    """Optimisation settings shared by every method."""

    seed: int = field(default=0, metadata={"help": "seed for data order, noise, timesteps and the mask"})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    max_steps: int = field(default=150, metadata={"help": "optimizer steps"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    mixed_precision: str | None = field(default=None, metadata={
        "help": "no, fp16 or bf16 (autocast; fp32 master weights); null takes accelerate's config or launch flag"})
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled weight decay, applied inside the mask only"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm; 0 disables"})
    lr_scheduler: str = field(default="constant_with_warmup", metadata={"help": "diffusers scheduler name"})
    lr_warmup_steps: int = field(default=0, metadata={"help": "warm-up steps"})
    ema_decay: float = field(default=0.0, metadata={
        "help": "EMA of trained weights, saved as the result; 0 disables. diffusers' EMAModel: the decay at step s "
                "is min(ema_decay, (1 + s) / (10 + s)), so 0.99 takes effect from step 890 on"})
    checkpointing_steps: int = field(default=0, metadata={"help": "save_state every N steps; 0 disables"})
    checkpoints_total_limit: int | None = field(default=2, metadata={"help": "keep at most N checkpoints"})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint path"})
    skip_nonfinite: int = field(default=0, metadata={
        "help": "skip at most N optimizer steps whose loss or gradient is NaN/inf; one more stops the run"})
    log_every: int = field(default=10, metadata={"help": "write a loss line every N steps"})
    report_to: str | None = field(default=None, metadata={"help": "accelerate tracker (tensorboard, wandb, ...)"})

    def __post_init__(self):
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")
        check(self.max_steps >= 1, "max_steps", self.max_steps, ">= 1")
        check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps",
              self.gradient_accumulation_steps, ">= 1")
        check(self.mixed_precision is None or self.mixed_precision in MIXED_PRECISION, "mixed_precision",
              self.mixed_precision, f"one of {', '.join(MIXED_PRECISION)} or null")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        check(self.max_grad_norm >= 0, "max_grad_norm", self.max_grad_norm, ">= 0")
        check(0 <= self.ema_decay < 1, "ema_decay", self.ema_decay, "in [0, 1)")
        check(self.checkpointing_steps >= 0, "checkpointing_steps", self.checkpointing_steps, ">= 0")
        check(self.checkpoints_total_limit is None or self.checkpoints_total_limit >= 1,
              "checkpoints_total_limit", self.checkpoints_total_limit, ">= 1 or null")
        check(self.log_every >= 1, "log_every", self.log_every, ">= 1")
        check(self.skip_nonfinite >= 0, "skip_nonfinite", self.skip_nonfinite, ">= 0")


def make_accelerator(config: TrainConfig, project_dir: str | Path) -> Accelerator:
    """An Accelerator for `config`. Without a GPU it is asked for CPU explicitly: otherwise, under
    `accelerate launch --multi_gpu` (torchrun) each process would think it is alone."""
    if AcceleratorState._shared_state and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # Accelerate keeps one process-wide state; in a single process, each erase (Python API or a
        # script erasing twice) starts its own, whatever precision the one before used.
        AcceleratorState._reset_state(reset_partial_state=True)
    no_device = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    # The LR schedule counts optimizer steps. Accelerate's default steps a prepared scheduler once per
    # process at every optimizer step, which would run warm-up and decay N times faster under N processes.
    return Accelerator(mixed_precision=config.mixed_precision, log_with=config.report_to,
                       project_dir=str(project_dir), cpu=no_device, step_scheduler_with_optimizer=False)


class TrainState:
    """The step counter, saved and restored with Accelerate's checkpoints."""

    def __init__(self):
        self.step = 0
        self.skipped = 0  # optimizer steps skipped for a non-finite loss or gradient

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])
        self.skipped = int(state.get("skipped", 0))


def step_generator(seed: int, step: int, micro: int, process: int) -> torch.Generator:
    """All randomness of one micro-batch comes from (seed, step, micro, process), so resume is exact."""
    mixed = seed * 0x9E3779B1 + step * 0x85EBCA77 + micro * 0xC2B2AE3D + process * 0x27D4EB2F
    return torch.Generator().manual_seed(mixed % (1 << 63))


def find_checkpoint(work_dir: Path, which: str) -> Path:
    """'latest' -> the highest `checkpoint-N` under `work_dir/checkpoints`; otherwise a path."""
    if which != "latest":
        path = Path(which)
        if not path.is_dir():
            raise ConfigError(f"'resume_from_checkpoint' is '{which}', which is not a checkpoint directory")
        return path
    found = sorted(
        (int(m.group(1)), p)
        for p in (work_dir / CHECKPOINT_DIR).glob("checkpoint-*")
        if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
    )
    if not found:
        raise ConfigError(
            f"'resume_from_checkpoint' is 'latest' but no checkpoint exists under {work_dir / CHECKPOINT_DIR}; "
            f"drop --resume-from-checkpoint to start afresh"
        )
    return found[-1][1]


class EraseTrainer:
    """Train `method` on `task` with Accelerate.

    Args:
        denoiser: the denoiser to train, a UNet or a transformer (its weights are changed in place).
        method: supplies trainable parameters, an optional mask and `compute_loss`.
        task: supplies data and conditioning (see `erase.tasks`).
        config: optimisation settings.
        work_dir: where checkpoints and `logs.jsonl` go.
        callbacks: `fn(trainer, step, logs)` run after each optimizer step on the main process.
    """

    def __init__(self, denoiser, method, task, config: TrainConfig, work_dir: str | Path,
                 callbacks: Sequence[Callable[[EraseTrainer, int, dict[str, Any]], None]] = (),
                 accelerator: Accelerator | None = None):
        self.method, self.task, self.config = method, task, config
        self.work_dir = Path(work_dir)
        self.callbacks = list(callbacks)
        self.accelerator = accelerator or make_accelerator(config, self.work_dir)
        self.state = TrainState()
        self.denoiser = denoiser
        self.ema = None

    def _masked_parameters(self) -> dict[str, tuple[torch.nn.Parameter, torch.Tensor | None]]:
        """Trainable parameters with their masks; weights with an empty mask are frozen outright."""
        params = self.method.trainable_parameters(self.denoiser, self.task)
        masks = self.method.mask.masks if self.method.mask is not None else {}
        out = {}
        for name, p in params.items():
            m = masks.get(name) if masks else None
            if masks and (m is None or not m.any()):
                continue
            out[name] = (p, None if m is None or m.all() else m.to(p.device))
        for p in self.denoiser.parameters():
            p.requires_grad_(False)
        for p, _ in out.values():
            p.requires_grad_(True)
        return out

    def _save_checkpoint(self) -> None:
        """Save into a temporary folder that every rank writes to, then rename it on the main process."""
        acc = self.accelerator
        root = self.work_dir / CHECKPOINT_DIR
        final = root / f"checkpoint-{self.state.step}"
        tmp = root / f".checkpoint-{self.state.step}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            limit = self.config.checkpoints_total_limit
            existing = sorted(root.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
            for old in existing[: max(0, len(existing) - limit)] if limit else []:
                discard_dir(old)
        acc.wait_for_everyone()

    def _truncate_log(self) -> None:
        """After a resume, the log holds the steps up to the checkpoint only: the steps an interrupted run
        logged after it are run again, and a line cut short by the interruption is dropped."""
        path = self.work_dir / LOG_FILE
        if not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("step", 0) <= self.state.step:
                kept.append(line + "\n")
        write_text(path, "".join(kept))

    def log(self, record: dict[str, Any]) -> None:
        """Append `record` to `logs.jsonl` (main process) and to the trackers."""
        if self.accelerator.is_main_process:
            with open(self.work_dir / LOG_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
        if self.config.report_to:
            self.accelerator.log(record, step=record["step"])

    def train(self) -> dict[str, Any]:
        """Run to `max_steps` (resuming if asked) and return the last logged losses."""
        cfg, acc = self.config, self.accelerator
        set_seed(cfg.seed)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        masked = self._masked_parameters()
        optimizer = MaskedAdamW([p for p, _ in masked.values()], [m for _, m in masked.values()],
                                lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                     num_training_steps=cfg.max_steps)
        denoiser, optimizer, lr_scheduler = acc.prepare(self.denoiser, optimizer, lr_scheduler)
        if cfg.ema_decay:
            self.ema = EMAModel([p for p, _ in masked.values()], decay=cfg.ema_decay)
            acc.register_for_checkpointing(self.ema)
        acc.register_for_checkpointing(self.state)
        if cfg.report_to:
            acc.init_trackers("erasekit", config=dict(vars(cfg)))
        if cfg.resume_from_checkpoint:
            acc.load_state(str(find_checkpoint(self.work_dir, cfg.resume_from_checkpoint)))
            if acc.is_main_process:
                self._truncate_log()

        last: dict[str, Any] = {}
        with Progress(cfg.max_steps, "train", initial=self.state.step, enabled=acc.is_main_process) as bar:
            denoiser.train()
            while self.state.step < cfg.max_steps:
                logs = self._optimizer_step(denoiser, optimizer, lr_scheduler, masked)
                self.state.step += 1
                bar.update(1, loss=logs["loss"] if "loss" in logs else "skipped")
                if self.ema is not None:
                    self.ema.step([p for p, _ in masked.values()])
                last = {"step": self.state.step, "lr": lr_scheduler.get_last_lr()[0], **logs}
                if self.state.step % cfg.log_every == 0 or self.state.step == cfg.max_steps:
                    self.log(last)
                if cfg.checkpointing_steps and self.state.step % cfg.checkpointing_steps == 0:
                    self._save_checkpoint()
                for callback in self.callbacks:
                    callback(self, self.state.step, last)
        if self.ema is not None:  # the result is the EMA; untouched weights keep their exact values
            self.ema.copy_to([p for p, _ in masked.values()])
        denoiser.eval()
        acc.wait_for_everyone()
        if cfg.report_to:
            acc.end_training()
        self.denoiser = acc.unwrap_model(denoiser, keep_fp32_wrapper=False)  # no autocast wrapper left on forward
        return last

    def _optimizer_step(self, denoiser, optimizer, lr_scheduler, masked) -> dict[str, Any]:
        cfg, acc = self.config, self.accelerator
        totals: dict[str, float] = {}
        accum = cfg.gradient_accumulation_steps
        bad = None
        for micro in range(accum):
            generator = step_generator(cfg.seed, self.state.step, micro, acc.process_index)
            sync = acc.no_sync(denoiser) if micro < accum - 1 else nullcontext()
            with sync, acc.autocast():
                loss, logs = self.method.compute_loss(denoiser, Sampler(self.task, generator, acc.device))
                if not math.isfinite(loss.item()):
                    bad = bad or f"the loss was {loss.item()}"
                acc.backward(loss / accum)  # even so: every process must join the gradient all-reduce
            for k, v in logs.items():
                totals[k] = totals.get(k, 0.0) + v / accum
        params = [p for p, _ in masked.values()]
        with torch.no_grad():  # outside the mask the gradient is zero, as SalUn's `grad *= mask` (after all-reduce)
            pairs = [(p.grad, m) for p, m in masked.values() if m is not None and p.grad is not None]
            if pairs:
                torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])
        # The all-reduced gradient decides, so every process skips (or not) together; a NaN loss gives one.
        if cfg.max_grad_norm:
            norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)
        else:
            grads = [p.grad.detach() for p in params if p.grad is not None]  # one foreach call, in fp32
            norm = torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32)).norm() if grads else torch.zeros(())
        if not torch.isfinite(torch.as_tensor(norm)).item():
            self._skip_or_stop(bad or "the gradient norm was not finite", optimizer, lr_scheduler)
            return {"skipped": 1}
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return totals

    def _skip_or_stop(self, why: str, optimizer, lr_scheduler) -> None:
        """Skip a step with a non-finite loss or gradient (weights untouched), or stop with the step named."""
        optimizer.zero_grad(set_to_none=True)
        self.state.skipped += 1
        step = self.state.step + 1
        if self.state.skipped > self.config.skip_nonfinite:
            try:
                kept = f"the last checkpoint, {find_checkpoint(self.work_dir, 'latest').name}, is kept"
            except ConfigError:
                kept = "no checkpoint was saved"
            raise NonFiniteError(
                f"{why} at step {step} ({self.state.skipped} non-finite step(s), {self.config.skip_nonfinite} "
                f"allowed); {kept}. Lower learning_rate, or pass --skip-nonfinite N to skip a few bad batches")
        logger.warning(f"{why} at step {step}; step skipped ({self.state.skipped} of "
                       f"{self.config.skip_nonfinite} allowed)")
        lr_scheduler.step()
