"""What an attack works on (an `Instance`, a `Context`) and what it returns (an `Adversary`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import check
from .slots import check_context


@dataclass(frozen=True)
class Instance:
    """One attack instance: the prompt or label to bring back, its concept images, and its seeds.

    `eval_seeds` judge the result; `select_seeds` (disjoint) are the only ones an attack may look at.
    """

    index: int
    target: str | int
    images: torch.Tensor  # (N, C, H, W) in [-1, 1], the concept images this instance may use
    image_ids: tuple[int, ...]
    eval_seeds: tuple[int, ...]
    select_seeds: tuple[int, ...]
    seed: int  # the attack's own randomness (noise draws, samples, initialisation)


@dataclass
class Adversary:
    """What an attack found for one instance, in a form the runner can generate from.

    - `prompt` (+ `injection`, a TextSlots or LabelRow): generate through the pipeline, the injected
      vectors active; a prompt without injection is real text anyone can type.
    - `images`: already generated on the evaluation seeds by the attack itself (trajectory, seed search).
    """

    prompt: str | int | None = None
    injection: Any = None
    images: list | None = None
    any_of: bool = False  # success when any image shows the concept (best-of-n), not a share
    ids: list[int] | None = None
    decoded: str | None = None
    round_trip: bool | None = None
    steps: int = 0
    threat_model: str | None = None  # when it differs from the attack's (random on a class-conditional model)
    extra: dict = field(default_factory=dict)


@dataclass
class Context:
    """The run around one instance: the base model (for attacks that need it) and the selection judge."""

    baseline: Any = None  # a Victim, or None
    check: Callable[[Adversary], bool] | None = None  # judge on the selection seeds


class PrefixTokens:
    """Configs with `k` tokens before the prompt: refused when they do not fit the tokenizers' context."""

    def check_model(self, pipe, prompt: str) -> None:
        check_context(pipe, self.k, prompt, "k")


@dataclass
class OptimSettings:
    """Optimisation settings that the gradient attacks share."""

    steps: int = field(default=100, metadata={"help": "optimizer steps per instance"})
    learning_rate: float = field(default=0.01, metadata={"help": "Adam learning rate"})
    batch_size: int = field(default=8, metadata={"help": "noisy samples of the concept images per step"})
    check_every: int = field(default=0, metadata={
        "help": "judge on the selection seeds every N steps and stop at the first success; 0: never"})

    def __post_init__(self):
        check(self.steps >= 1, "steps", self.steps, ">= 1")
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")
        check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        check(self.check_every >= 0, "check_every", self.check_every, ">= 0")


def batch_of(instance: Instance, x0: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """`size` latents drawn (with replacement) from the instance's concept latents."""
    return x0[torch.randint(0, x0.shape[0], (size,), generator=generator)]


def optimise(params: list[torch.Tensor], settings: OptimSettings, step_loss: Callable[[int], torch.Tensor],
             check: Callable[[], bool] | None = None, weight_decay: float = 0.0,
             after_step: Callable[[], None] | None = None) -> tuple[int, list[float]]:
    """Adam on `params` for `settings.steps` steps of `step_loss(step)`; stops at the first success of
    `check` (every `check_every` steps). Returns the steps taken and the loss curve."""
    optimizer = torch.optim.Adam(params, lr=settings.learning_rate, weight_decay=weight_decay)
    losses = []
    for step in range(1, settings.steps + 1):
        loss = step_loss(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if after_step is not None:
            with torch.no_grad():
                after_step()
        losses.append(float(loss.detach()))
        if check is not None and settings.check_every and step % settings.check_every == 0 and check():
            return step, losses
    return settings.steps, losses
