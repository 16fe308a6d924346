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


class PrefixSearch:
    """`k` prefix tokens before an instance's prompt, over the first tokenizer's whole-word vocabulary: the
    placeholder slots, each sharing encoder's embedding table of those words, the instance's latents."""

    def __init__(self, victim, instance: Instance, k: int):
        self.slots = TextSlots(victim.pipe, k, avoid=str(instance.target))
        self.tokenizer = self.slots.encoders[next(iter(self.slots.encoders))][0]
        self.vocab = word_ids(self.tokenizer)
        self.names = shared_vocab(self.slots)
        self.tables = {n: self.slots.table(n)[self.vocab.to(self.slots.table(n).device)].float() for n in self.names}
        self.target = str(instance.target)
        self.prompt = f"{self.slots.text} {self.target}"
        self.x0 = victim.latents(instance.images)
        self.generator = torch.Generator().manual_seed(instance.seed)

    def adversary(self, picks: torch.Tensor) -> Adversary:
        """The real prompt of vocabulary positions `picks` (k) before the instance's prompt."""
        return Adversary(**decode_prompt(self.tokenizer, self.vocab[picks.cpu()].tolist(), self.target))

    def search(self, params, settings, step_loss, current, context: Context, **optim) -> Adversary:
        check = (lambda: context.check(current())) if context.check else None
        steps, losses = optimise(params, settings, step_loss, check, **optim)
        adversary = current()
        adversary.steps, adversary.extra = steps, {"final_loss": losses[-1]}
        return adversary


class UDAAttack:
    def __init__(self, config: UDAConfig):
        self.config = config

    def run(self, victim, instance: Instance, context: Context) -> Adversary:
        config, search = self.config, PrefixSearch(victim, instance, self.config.k)
        generator = search.generator
        probs = torch.rand(config.k, len(search.vocab), generator=generator).to(victim.device)
        probs = (probs / probs.sum(-1, keepdim=True)).requires_grad_(True)

        def step_loss(step):
            pick = torch.multinomial(probs.detach().cpu(), 1, generator=generator).squeeze(-1).to(probs.device)
            one_hot = F.one_hot(pick, len(search.vocab)).float() - probs.detach() + probs  # straight-through
            search.slots.vectors = {n: one_hot @ search.tables[n] for n in search.names}
            with search.slots.active():
                cond = victim.conditions([search.prompt])
                return victim.loss(cond, batch_of(instance, search.x0, config.batch_size, generator), generator)

        def projected():
            probs.copy_(project_simplex(probs))

        return search.search([probs], config, step_loss, lambda: search.adversary(probs.detach().argmax(-1)),
                             context, weight_decay=config.weight_decay, after_step=projected)


class P4DAttack:
    def __init__(self, config: P4DConfig):
        self.config = config

    def run(self, victim, instance: Instance, context: Context) -> Adversary:
        config, base = self.config, context.baseline or victim
        if not base.has_text:
            raise ConfigError("p4d needs a text-to-image base model; pass --baseline")
        search = PrefixSearch(victim, instance, config.k)
        first_name = search.names[0]
        first = search.tables[first_name]
        soft = search.slots.initial(first_name).requires_grad_(True)
        with torch.no_grad():
            base_cond = base.conditions([instance.target])

        def nearest() -> torch.Tensor:
            return (F.normalize(soft.detach(), dim=-1) @ F.normalize(first, dim=-1).T).argmax(-1)

        def step_loss(step):
            pick = nearest()
            search.slots.vectors = {n: search.tables[n][pick] + (soft - soft.detach() if n == first_name else 0)
                                    for n in search.names}
            x0 = batch_of(instance, search.x0, config.batch_size, search.generator)
            batch = victim.noisy(x0, search.generator)
            rows = torch.zeros(batch.z_t.shape[0], dtype=torch.long, device=batch.z_t.device)
            with torch.no_grad():
                goal = base.predict(batch.z_t, batch.t, {k: v[rows] for k, v in base_cond.items()})
            with search.slots.active():
                cond = victim.conditions([search.prompt])
                pred = victim.predict(batch.z_t, batch.t, {k: v[rows] for k, v in cond.items()})
            return F.mse_loss(pred.float(), goal.float())

        return search.search([soft], config, step_loss, lambda: search.adversary(nearest()), context)


register_attack("uda", UDAConfig, UDAAttack, threat_model="prompt", needs=("text",))
register_attack("p4d", P4DConfig, P4DAttack, threat_model="prompt", needs=("text",))
