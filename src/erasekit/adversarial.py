"""Attack in the loop (after AdvUnlearn and STEREO): during an erase, an attack from the registry is run
against the model being trained, and the forget batches then also carry what it found.

Rounds are spread evenly over the training: with `adversarial_rounds: R` and `max_steps: S`, the attack runs
after steps S/(R+1), 2S/(R+1), ... The attack inverts the concept from the task's own forget samples (the
model's weights frozen, as an attacker who holds them would), and its condition (an embedding row on a
class-conditional model; the text encoders' output for the found prompt, its embeddings injected, on a text
model) becomes a condition id of the task. From then on `adversarial_share` of every forget batch is
remapped under found conditions instead of the concept's own, with whatever forget objective the method
has (its null-branch term and retain term unchanged). Found conditions are kept in the staging directory,
so a resumed run trains on the same ones.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .attacks import get_attack
from .attacks.common import Context, Instance
from .attacks.victim import Victim
from .config import check
from .errors import ConfigError
from .io import atomic_file
from .pipelines.adapters import adapter_for
from .pipelines.inference import place

logger = logging.getLogger(__name__)

FOUND_FILE = "adversarial_conditions.safetensors"
# Attacks whose result is a condition the model can be trained under (the others return images or seeds).
CONDITION_THREATS = ("embedding", "prompt", "encoder-only")


@dataclass
class AdversarialConfig:
    """An attack run against the model during its erase, whose findings are erased too."""

    adversarial_rounds: int = field(default=0, metadata={
        "help": "attack rounds during training (0: none); the attack runs after steps S/(R+1), ..., RS/(R+1)"})
    adversarial_attack: str = field(default="cce", metadata={
        "help": "the registered attack run in the loop: one that finds a condition (cce or soft on any model; "
                "uda, p4d or ringabell on text models). Judge the result with a different one"})
    adversarial_steps: int = field(default=50, metadata={"help": "the attack's optimizer steps per round"})
    adversarial_samples: int = field(default=64, metadata={
        "help": "forget samples the attack inverts from each round (drawn with the run's seed)"})
    adversarial_share: float = field(default=0.5, metadata={
        "help": "share of each forget batch remapped under the found conditions (after the first round)"})

    def __post_init__(self):
        check(self.adversarial_rounds >= 0, "adversarial_rounds", self.adversarial_rounds, ">= 0")
        check(self.adversarial_steps >= 1, "adversarial_steps", self.adversarial_steps, ">= 1")
        check(self.adversarial_samples >= 1, "adversarial_samples", self.adversarial_samples, ">= 1")
        check(0 < self.adversarial_share <= 1, "adversarial_share", self.adversarial_share, "in (0, 1]")
        spec = get_attack(self.adversarial_attack)
        if spec.threat_model not in CONDITION_THREATS:
            raise ConfigError(f"'adversarial_attack' is {self.adversarial_attack!r}, whose threat model "
                              f"({spec.threat_model}) finds no condition to train under; choose cce or soft (or uda, "
                              f"p4d, ringabell on a text model)")

    def check_family(self, family: str) -> None:
        """Refuse an attack that needs a text model on a class-conditional one, before any training."""
        if self.adversarial_rounds and "text" in get_attack(self.adversarial_attack).needs \
                and family == "class-conditional":
            raise ConfigError(f"'adversarial_attack' {self.adversarial_attack!r} needs a text model, but this one is "
                              f"class-conditional; use cce or soft")

    def attack_config(self):
        config_cls = get_attack(self.adversarial_attack).config
        names = {f.name for f in fields(config_cls)}
        return config_cls(**({"steps": self.adversarial_steps} if "steps" in names else {}))


class FoundVictim(Victim):
    """The model under training as an attack's victim: its forget samples are already in the denoiser's input
    space, so `latents` passes them through."""

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device)


@contextlib.contextmanager
def frozen_for_attack(denoiser: torch.nn.Module):
    """The attack freezes and evaluates every part of the pipeline; the trained weights' flags and the train
    mode come back afterwards."""
    flags = [p.requires_grad for p in denoiser.parameters()]
    training = denoiser.training
    try:
        yield
    finally:
        for p, flag in zip(denoiser.parameters(), flags):
            p.requires_grad_(flag)
        denoiser.train(training)


class AdversarialRounds:
    """A trainer callback: the attack rounds of one erase."""

    def __init__(self, config: AdversarialConfig, base, task, concept: dict[str, Any], seed: int, staging: Path,
                 max_steps: int, is_main_process: bool = True, resume_from: int = 0):
        self.config, self.base, self.task, self.concept = config, base, task, concept
        self.seed, self.staging, self.is_main = seed, Path(staging), is_main_process
        rounds = config.adversarial_rounds
        self.at = sorted({round(k * max_steps / (rounds + 1)) for k in range(1, rounds + 1)} - {0, max_steps})
        self.found: dict[str, torch.Tensor] = {}
        task.adversarial_share = config.adversarial_share
        self.missed = self._resume(resume_from) if resume_from else []

    def target(self, at: int) -> str | int:
        """The label or prompt the round at step `at` inverts: the forget classes (prompts) in turn."""
        targets = self.concept.get("forget_classes") or self.concept["forget_prompts"]
        return targets[self.at.index(at) % len(targets)] if at in self.at else targets[0]

    def _resume(self, checkpoint: int) -> list[int]:
        """A run resumed from the checkpoint at step `checkpoint` trains on what the interrupted run found up
        to that step; returns the rounds due by then that it did not finish (run at the first step)."""
        path = self.staging / FOUND_FILE
        saved = load_file(path) if path.is_file() else {}
        self.found = {n: v for n, v in saved.items() if int(n.split("/")[0]) <= checkpoint}
        done = sorted({int(n.split("/")[0]) for n in self.found})
        for found_at in done:
            self.task.add_adversary(self._condition(found_at))
        return [r for r in self.at if r <= checkpoint and r not in done]

    def _condition(self, found_at: int):
        rows = {n.split("/", 1)[1]: v for n, v in self.found.items() if int(n.split("/")[0]) == found_at}
        return rows["class_embedding"] if set(rows) == {"class_embedding"} else rows

    def __call__(self, trainer, step: int, logs: dict) -> None:
        due, self.missed = [r for r in self.missed if r < step] + ([step] if step in self.at else []), []
        for at in due:  # a round the interrupted run did not finish runs late, at the first step resumed
            self.run_round(trainer, at, step)

    def run_round(self, trainer, at: int, step: int) -> None:
        condition, extra = self.attack(trainer.denoiser, at)
        self.task.add_adversary(condition)
        rows = {"class_embedding": condition} if isinstance(condition, torch.Tensor) else condition
        self.found.update({f"{at}/{k}": v.detach().float().cpu().contiguous() for k, v in rows.items()})
        if self.is_main:
            with atomic_file(self.staging / FOUND_FILE) as tmp:
                save_file(self.found, str(tmp))
        record = {"step": step, "adversarial_round": self.at.index(at) + 1,
                  "adversarial_attack": self.config.adversarial_attack, **extra}
        trainer.log(record)
        logger.info(f"attack round {record['adversarial_round']} at step {step}: {extra}")

    def attack(self, denoiser, step: int):
        """Run the attack on the current weights; returns the condition it found and its summary."""
        spec = get_attack(self.config.adversarial_attack)
        adapter = adapter_for(self.base)
        generator = torch.Generator().manual_seed(self.seed + step)
        target = self.target(step)
        pool = torch.arange(len(self.task.forget_x)) if isinstance(target, str) else \
            torch.nonzero(self.task.forget_c == target).squeeze(1)  # the images of the class it inverts
        pick = pool[torch.randint(0, len(pool), (self.config.adversarial_samples,), generator=generator)]
        instance = Instance(index=0, target=target, images=self.task.forget_x[pick],
                            image_ids=tuple(pick.tolist()), eval_seeds=(), select_seeds=(), seed=self.seed + step)
        device = next(denoiser.parameters()).device
        unwrapped = getattr(denoiser, "module", denoiser)
        with frozen_for_attack(unwrapped):
            victim = FoundVictim(adapter.with_denoiser(unwrapped), "erased", "training", device=device)
            adversary = spec.attack(self.config.attack_config()).run(victim, instance, Context())
            if not victim.has_text:
                condition = adversary.injection.vector.detach()
            else:
                injected = adversary.injection.active() if adversary.injection is not None else contextlib.nullcontext()
                with torch.no_grad(), injected:
                    condition = victim.conditions([adversary.prompt])
            if victim.has_text and device.type != "cpu":
                place(self.base, "cpu")  # the frozen encoders go back where the text task keeps them
        extra = {k: v for k, v in adversary.extra.items() if isinstance(v, (int, float, str))}
        return condition, {"attack_steps": adversary.steps, **extra}
