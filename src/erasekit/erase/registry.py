"""The method protocol and registry (in the manner of peft's `register_peft_method`); it imports no method.

A method gives the one trainer:
- `prepare(denoiser, task, generator, shard, teacher)`: work before training (a saliency mask); a method
  with `needs_teacher = True` receives a frozen copy of the base denoiser here;
- `trainable_parameters(denoiser, task)`: which weights it may change, and `mask` (or None) inside them;
- `compute_loss(denoiser, sampler) -> (loss, logs)`: one micro-batch's loss, drawing batches, noise and
  remapping targets from the trainer's `Sampler`;
- or, for a training-free method, `edit(denoiser, task) -> logs`, which changes the weights in closed form
  and replaces the training loop (with `needs_images = False` no images are gathered for it).

Each method lives in its own module of `erase.methods` with its config and calls `register_method`;
`erase/methods/__init__.py` is the catalog that imports them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from ..errors import ConfigError
from .saliency import SaliencyMask
from .tasks import ConditionTask, Sampler


@dataclass(frozen=True)
class Shard:
    """This process's place among `world` processes, and how to sum a tensor over all of them."""

    rank: int = 0
    world: int = 1
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None


SINGLE = Shard()


class Method:
    """The protocol every registered method follows (see the module docstring)."""

    mask: SaliencyMask | None = None
    needs_teacher = False
    needs_images = True  # False: the method works from the conditions alone (no forget/retain images)
    edit = None  # a training-free method defines `edit(denoiser, task) -> logs`
    model: str | None = None  # where the base model was loaded from (set by `erase`), for its sidecar files
    # Pipeline classes (by name, subclasses included) the method works on, and how to say so; None: every one.
    pipelines: tuple[str, ...] | None = None
    supported_models = "every supported model"

    def prepare(self, denoiser, task: ConditionTask, generator: torch.Generator, shard: Shard = SINGLE,
                teacher=None) -> None:
        """Nothing to compute before training."""

    def trainable_parameters(self, denoiser, task: ConditionTask) -> dict[str, torch.nn.Parameter]:
        return dict(denoiser.named_parameters())

    def compute_loss(self, denoiser, sampler: Sampler) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError


class MethodSpec(NamedTuple):
    """A registered method: its config dataclass, its class, and the one line the card and --help show."""

    config: type
    method: type
    description: str


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, config_cls: type, method_cls: type, description: str | None = None) -> None:
    """Register `method_cls` (built from a `config_cls` instance) under `name`. It need not subclass `Method`;
    any protocol attribute it leaves out (`mask`, `needs_teacher`, `needs_images`, `edit`) takes `Method`'s
    default. `description` (default: the first line of the config's docstring) is the method's one line in
    model cards and `erasekit erase --help`."""
    if not (callable(getattr(method_cls, "compute_loss", None)) or callable(getattr(method_cls, "edit", None))):
        raise TypeError(f"method {name!r}: {method_cls.__name__} defines neither compute_loss (trained) nor "
                        "edit (training-free); define one of them")
    if not issubclass(method_cls, Method):
        method_cls = type(method_cls.__name__, (method_cls, Method), {"__module__": method_cls.__module__})
    line = description or (config_cls.__doc__ or name).strip().splitlines()[0]
    METHODS[name] = MethodSpec(config_cls, method_cls, line)


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ConfigError(f"'method' is {name!r}; registered methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]
