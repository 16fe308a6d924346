"""Prompt attacks that end in real tokens: `uda` (UnlearnDiffAtk) and `p4d`.

Both optimise k prefix tokens of the first tokenizer's vocabulary before the instance's prompt. Encoders
that share that vocabulary receive the same tokens (through their own embedding tables); an encoder
with another vocabulary (T5) reads the placeholder words during optimisation and the decoded text at
evaluation. The result is the decoded prompt, typed into the pipeline as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import check
from ..errors import ConfigError
from .common import Adversary, Context, Instance, OptimSettings, PrefixTokens, batch_of, optimise
from .registry import register_attack
from .slots import TextSlots
from .vocab import decode_prompt, word_ids


def project_simplex(p: torch.Tensor) -> torch.Tensor:
    """Each row of `p` projected onto the probability simplex (Euclidean; Duchi et al. 2008)."""
    sorted_p, _ = p.sort(dim=-1, descending=True)
    cumulative = sorted_p.cumsum(-1) - 1
    index = torch.arange(1, p.shape[-1] + 1, dtype=p.dtype)
    rho = ((sorted_p - cumulative / index) > 0).sum(-1, keepdim=True)
    theta = cumulative.gather(-1, rho - 1) / rho.to(p.dtype)
    return (p - theta).clamp(min=0)


def shared_vocab(slots: TextSlots) -> list[str]:
    """The encoders whose tokenizer has the first tokenizer's vocabulary."""
    names = list(slots.encoders)
    first = slots.encoders[names[0]][0].get_vocab()
    return [n for n in names if slots.encoders[n][0].get_vocab() == first]


@dataclass
class UDAConfig(OptimSettings, PrefixTokens):
    """uda: UnlearnDiffAtk (Zhang et al., ECCV 2024), k prefix tokens on the simplex, the model as its own judge"""

    k: int = field(default=3, metadata={"help": "prefix tokens (the paper: 5 for nudity, 3 for objects)"})
    steps: int = field(default=40, metadata={"help": "optimizer steps per instance"})
    weight_decay: float = field(default=0.1, metadata={"help": "Adam weight decay"})
    check_every: int = field(default=20, metadata={
        "help": "steps per timestep block; the decoded prompt is judged on the selection seeds after each"})

    def __post_init__(self):
        super().__post_init__()
        check(self.k >= 1, "k", self.k, ">= 1")


@dataclass
class P4DConfig(OptimSettings, PrefixTokens):
    """p4d: prompting4debugging (Chin et al., ICML 2024), projected prefix tokens matched to the base's prediction"""

    k: int = field(default=3, metadata={"help": "prefix tokens"})
    steps: int = field(default=40, metadata={"help": "optimizer steps per instance"})

    def __post_init__(self):
        super().__post_init__()
        check(self.k >= 1, "k", self.k, ">= 1")


class UDAAttack:
    def __init__(self, config: UDAConfig):
        self.config = config

    def run(self, victim, instance: Instance, context: Context) -> Adversary:
        config = self.config
        slots = TextSlots(victim.pipe, config.k, avoid=str(instance.target))
        tokenizer = slots.encoders[next(iter(slots.encoders))][0]
        vocab = word_ids(tokenizer)
        names = shared_vocab(slots)
        tables = {n: slots.table(n)[vocab.to(slots.table(n).device)].float() for n in names}
        generator = torch.Generator().manual_seed(instance.seed)
        probs = torch.rand(config.k, len(vocab), generator=generator).to(victim.device)
        probs = (probs / probs.sum(-1, keepdim=True)).requires_grad_(True)
        prompt = f"{slots.text} {instance.target}"
        x0 = victim.latents(instance.images)

        def step_loss(step):
            pick = torch.multinomial(probs.detach().cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
            one_hot = F.one_hot(pick, len(vocab)).float() - probs.detach() + probs  # straight-through
            slots.vectors = {n: one_hot @ tables[n] for n in names}
            with slots.active():
                cond = victim.conditions([prompt])
                return victim.loss(cond, batch_of(instance, x0, config.batch_size, generator), generator)

        def current() -> Adversary:
            return Adversary(**decode_prompt(tokenizer, vocab[probs.detach().argmax(-1).cpu()].tolist(),
                                             str(instance.target)))

        def projected():
            probs.copy_(project_simplex(probs))

        steps, losses = optimise([probs], config, step_loss, (lambda: context.check(current())) if context.check
                                 else None, weight_decay=config.weight_decay, after_step=projected)
        adversary = current()
        adversary.steps, adversary.extra = steps, {"final_loss": losses[-1]}
        return adversary


class P4DAttack:
    def __init__(self, config: P4DConfig):
        self.config = config

    def run(self, victim, instance: Instance, context: Context) -> Adversary:
        config = self.config
        base = context.baseline or victim
        if not base.has_text:
            raise ConfigError("p4d needs a text-to-image base model; pass --baseline")
        slots = TextSlots(victim.pipe, config.k, avoid=str(instance.target))
        tokenizer = slots.encoders[next(iter(slots.encoders))][0]
        vocab = word_ids(tokenizer)
        names = shared_vocab(slots)
        tables = {n: slots.table(n)[vocab.to(slots.table(n).device)].float() for n in names}
        first = tables[names[0]]
        soft = slots.initial(names[0]).requires_grad_(True)
        prompt = f"{slots.text} {instance.target}"
        x0 = victim.latents(instance.images)
        generator = torch.Generator().manual_seed(instance.seed)
        with torch.no_grad():
            base_cond = base.conditions([instance.target])

        def nearest() -> torch.Tensor:
            return (F.normalize(soft.detach(), dim=-1) @ F.normalize(first, dim=-1).T).argmax(-1)

        def step_loss(step):
            pick = nearest()
            slots.vectors = {n: tables[n][pick] + (soft - soft.detach() if n == names[0] else 0) for n in names}
            batch = victim.noisy(batch_of(instance, x0, config.batch_size, generator), generator)
            rows = torch.zeros(batch.z_t.shape[0], dtype=torch.long, device=batch.z_t.device)
            with torch.no_grad():
                goal = base.predict(batch.z_t, batch.t, {k: v[rows] for k, v in base_cond.items()})
            with slots.active():
                cond = victim.conditions([prompt])
                pred = victim.predict(batch.z_t, batch.t, {k: v[rows] for k, v in cond.items()})
            return F.mse_loss(pred.float(), goal.float())

        def current() -> Adversary:
            return Adversary(**decode_prompt(tokenizer, vocab[nearest().cpu()].tolist(), str(instance.target)))

        steps, losses = optimise([soft], config, step_loss,
                                 (lambda: context.check(current())) if context.check else None)
        adversary = current()
        adversary.steps, adversary.extra = steps, {"final_loss": losses[-1]}
        return adversary


register_attack("uda", UDAConfig, UDAAttack, threat_model="prompt", needs=("text",))
register_attack("p4d", P4DConfig, P4DAttack, threat_model="prompt", needs=("text",))
