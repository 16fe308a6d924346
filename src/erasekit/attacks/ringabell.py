"""`ringabell`: Ring-A-Bell (Tsai et al., ICLR 2024), a prompt found with the text encoder alone.

A concept vector is the mean difference of the encoder's outputs for prompt pairs with and without the
concept; the target is the prompt without the concept plus `strength` times that vector; a genetic
search over `k` vocabulary tokens looks for the real prompt whose encoding is nearest the target. It
never runs the denoiser, so it is a transfer attack: the prompt is then typed into the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import check
from ..errors import ConfigError
from .common import Adversary, Context, Instance
from .registry import register_attack
from .slots import check_context, text_encoders
from .vocab import decode_prompt, word_ids


@dataclass
class RingABellConfig:
    """ringabell: Ring-A-Bell (Tsai et al., ICLR 2024), a concept vector and a genetic search over k tokens"""

    k: int = field(default=8, metadata={"help": "tokens of the found prompt"})
    strength: float = field(default=3.0, metadata={"help": "how far along the concept vector the target lies"})
    population: int = field(default=32, metadata={"help": "prompts per generation"})
    generations: int = field(default=30, metadata={"help": "generations of the genetic search"})
    mutation: float = field(default=0.2, metadata={"help": "chance that a token is redrawn"})
    pairs: list[str] = field(default_factory=list, metadata={
        "help": "'with concept | without concept' prompt pairs; empty: each forget prompt and it without its last word"})

    def __post_init__(self):
        check(self.k >= 1, "k", self.k, ">= 1")
        check(self.population >= 4, "population", self.population, ">= 4")
        check(self.generations >= 1, "generations", self.generations, ">= 1")
        check(0 <= self.mutation <= 1, "mutation", self.mutation, "in [0, 1]")
        for pair in self.pairs:
            check(pair.count("|") == 1, "pairs", pair, "'prompt with the concept | the same without it'")

    def check_model(self, pipe, prompt: str) -> None:
        check_context(pipe, self.k, "", "k")


class RingABellAttack:
    def __init__(self, config: RingABellConfig):
        self.config = config

    def _pairs(self, prompt: str) -> list[tuple[str, str]]:
        if self.config.pairs:
            return [tuple(part.strip() for part in pair.split("|")) for pair in self.config.pairs]
        return [(prompt, " ".join(prompt.split()[:-1]))]

    def run(self, victim, instance: Instance, context: Context) -> Adversary:
        config = self.config
        encoders = text_encoders(victim.pipe)
        if not encoders:
            raise ConfigError("ringabell needs a text encoder; this model has none")
        check_context(victim.pipe, config.k, "")
        tokenizer = next(iter(encoders.values()))[0]
        vocab = word_ids(tokenizer)
        generator = torch.Generator().manual_seed(instance.seed)
        with torch.no_grad():
            pairs = self._pairs(str(instance.target))
            enc = victim.conditions([p for pair in pairs for p in pair])
            key = "encoder_hidden_states"
            concept = (enc[key][0::2] - enc[key][1::2]).mean(0)
            target = enc[key][1] + config.strength * concept

            def fitness(population: torch.Tensor) -> torch.Tensor:
                texts = [decode_prompt(tokenizer, row.tolist(), "")["prompt"] for row in vocab[population]]
                return -((victim.conditions(texts)[key] - target) ** 2).flatten(1).mean(1)

            population = torch.randint(0, len(vocab), (config.population, config.k), generator=generator)
            scores = fitness(population)
            for _ in range(config.generations):
                order = scores.argsort(descending=True)
                parents = population[order[: config.population // 2]]
                mates = parents[torch.randint(0, len(parents), (len(parents),), generator=generator)]
                cut = torch.rand(parents.shape, generator=generator) < 0.5
                children = torch.where(cut, parents, mates)
                redraw = torch.rand(children.shape, generator=generator) < config.mutation
                children = torch.where(redraw, torch.randint(0, len(vocab), children.shape, generator=generator),
                                       children)
                population = torch.cat([parents, children])
                scores = torch.cat([scores[order[: config.population // 2]], fitness(children)])
        best = vocab[population[scores.argmax()]].tolist()
        adversary = Adversary(**decode_prompt(tokenizer, best, ""))
        adversary.steps, adversary.extra = config.generations, {"fitness": float(scores.max()), "transfer": True}
        return adversary


register_attack("ringabell", RingABellConfig, RingABellAttack, threat_model="encoder-only", needs=("text",))
