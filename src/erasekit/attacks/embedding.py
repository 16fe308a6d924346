"""Embedding attacks: learned vectors fed to a frozen model (`cce`: concept inversion, `soft`: free prefix).

Both minimise the erased model's own diffusion loss on the instance's concept images, every weight
frozen. On a class-conditional model the "token" is a label's row of the class-embedding table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import check
from .common import Adversary, Context, Instance, OptimSettings, PrefixTokens, batch_of, optimise
from .registry import register_attack
from .slots import LabelRow, TextSlots, check_context


@dataclass
class CCEConfig(OptimSettings):
    """cce: concept inversion (Pham et al., ICLR 2024), new token embeddings or the erased label's row"""

    steps: int = field(default=100, metadata={"help": "optimizer steps per instance"})
    learning_rate: float = field(default=0.05, metadata={"help": "Adam learning rate"})
    tokens: int = field(default=1, metadata={"help": "text models: learned tokens"})
    template: str = field(default="{tokens}", metadata={
        "help": "text models: the prompt around the learned tokens, e.g. 'a photo of {tokens}'"})

    def __post_init__(self):
        super().__post_init__()
        check(self.tokens >= 1, "tokens", self.tokens, ">= 1")
        check("{tokens}" in self.template, "template", self.template, "a text containing {tokens}")

    def check_model(self, pipe, prompt: str) -> None:
        check_context(pipe, self.tokens, self.template.replace("{tokens}", ""), "tokens")


@dataclass
class SoftConfig(OptimSettings, PrefixTokens):
    """soft: free continuous prefix embeddings before the prompt (not projected): the white-box upper bound"""

    steps: int = field(default=100, metadata={"help": "optimizer steps per instance"})
    learning_rate: float = field(default=0.05, metadata={"help": "Adam learning rate"})
    k: int = field(default=3, metadata={"help": "text models: prefix vectors"})

    def __post_init__(self):
        super().__post_init__()
        check(self.k >= 1, "k", self.k, ">= 1")


def learn(victim, instance: Instance, prompt, injection, params: list[torch.Tensor], settings: OptimSettings,
          context: Context) -> tuple[int, list[float]]:
    """Minimise the victim's diffusion loss of the instance's images under `prompt` with `injection` on."""
    x0 = victim.latents(instance.images)
    generator = torch.Generator().manual_seed(instance.seed)

    def step_loss(step):
        with injection.active():
            cond = victim.conditions([prompt])
            return victim.loss(cond, batch_of(instance, x0, settings.batch_size, generator), generator)

    def selected():
        return context.check(Adversary(prompt, injection))

    return optimise(params, settings, step_loss, selected if context.check else None)


def text_vectors(slots: TextSlots) -> list[torch.Tensor]:
    """One trainable (k, width) tensor per encoder, started at the placeholder words' embeddings."""
    for name in slots.encoders:
        slots.vectors[name] = slots.initial(name).requires_grad_(True)
    return list(slots.vectors.values())


class CCEAttack:
    def __init__(self, config: CCEConfig):
        self.config = config

    def run(self, victim, instance: Instance, context: Context) -> Adversary:
        if not victim.has_text:
            row = LabelRow(victim.denoiser, int(instance.target))
            row.vector.requires_grad_(True)
            steps, losses = learn(victim, instance, instance.target, row, [row.vector], self.config, context)
            row.vector = row.vector.detach()
            return Adversary(instance.target, row, steps=steps, extra={"final_loss": losses[-1]})
        slots = TextSlots(victim.pipe, self.config.tokens, avoid=self.config.template)
        prompt = self.config.template.format(tokens=slots.text)
        steps, losses = learn(victim, instance, prompt, slots, text_vectors(slots), self.config, context)
        slots.vectors = {k: v.detach() for k, v in slots.vectors.items()}
        return Adversary(prompt, slots, steps=steps, extra={"final_loss": losses[-1]})


class SoftAttack:
    def __init__(self, config: SoftConfig):
        self.config = config

    def run(self, victim, instance: Instance, context: Context) -> Adversary:
        if not victim.has_text:  # the free vector starts from the null label's row, not the erased one's
            row = LabelRow(victim.denoiser, int(instance.target))
            row.vector = victim.denoiser.class_embedding.weight[victim.null_label].detach().clone().requires_grad_()
            steps, losses = learn(victim, instance, instance.target, row, [row.vector], self.config, context)
            row.vector = row.vector.detach()
            return Adversary(instance.target, row, steps=steps, extra={"final_loss": losses[-1]})
        slots = TextSlots(victim.pipe, self.config.k, avoid=str(instance.target))
        prompt = f"{slots.text} {instance.target}"
        steps, losses = learn(victim, instance, prompt, slots, text_vectors(slots), self.config, context)
        slots.vectors = {k: v.detach() for k, v in slots.vectors.items()}
        return Adversary(prompt, slots, steps=steps, extra={"final_loss": losses[-1]})


register_attack("cce", CCEConfig, CCEAttack, threat_model="embedding")
register_attack("soft", SoftConfig, SoftAttack, threat_model="embedding")
