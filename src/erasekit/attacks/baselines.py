"""Baselines: `random` tokens (or a random label row), `seed_search` (best of n seeds), `transfer` (replay)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import check
from ..errors import ConfigError
from .common import Adversary, Context, Instance, PrefixTokens
from .registry import register_attack
from .slots import LabelRow, check_context, text_encoders
from .vocab import decode_prompt, word_ids


@dataclass
class RandomConfig(PrefixTokens):
    """random: k random vocabulary words before the prompt (a random label row on class-conditional models)"""

    k: int = field(default=3, metadata={"help": "random words before the prompt"})

    def __post_init__(self):
        check(self.k >= 1, "k", self.k, ">= 1")


class RandomAttack:
    def __init__(self, config: RandomConfig):
        self.config = config

    def run(self, victim, instance: Instance, context: Context) -> Adversary:
        generator = torch.Generator().manual_seed(instance.seed)
        if not victim.has_text:
            row = LabelRow(victim.denoiser, int(instance.target))
            table = victim.denoiser.class_embedding.weight.detach()
            noise = torch.randn(table.shape[1], generator=generator).to(table.device, table.dtype)
            row.vector = noise * table.std(0) + table.mean(0)
            return Adversary(instance.target, row, threat_model="embedding")
        check_context(victim.pipe, self.config.k, str(instance.target))
        tokenizer = next(iter(text_encoders(victim.pipe).values()))[0]
        vocab = word_ids(tokenizer)
        ids = vocab[torch.randint(0, len(vocab), (self.config.k,), generator=generator)].tolist()
        return Adversary(**decode_prompt(tokenizer, ids, str(instance.target)))


@dataclass
class SeedSearchConfig:
    """seed_search: the original prompt or label on n seeds; success when any one shows the concept"""

    budget: int = field(default=16, metadata={"help": "seeds tried per instance"})

    def __post_init__(self):
        check(self.budget >= 1, "budget", self.budget, ">= 1")


class SeedSearchAttack:
    def __init__(self, config: SeedSearchConfig):
        self.config = config

    def run(self, victim, instance: Instance, context: Context) -> Adversary:
        seeds = [instance.eval_seeds[0] * 1000 + j for j in range(self.config.budget)]
        return Adversary(instance.target, images=victim.generate(instance.target, seeds), any_of=True,
                         extra={"seeds": seeds})


@dataclass
class TransferConfig:
    """transfer: replay prompts found elsewhere (a file, one per line); reported apart, never as adaptive"""

    prompts_file: str | None = field(default=None, metadata={"help": "text file, one prompt per line"})
    prompts: list[str] = field(default_factory=list, metadata={"help": "prompts to replay (with or instead of the file)"})

    def __post_init__(self):
        if self.prompts_file is not None:
            path = Path(self.prompts_file)
            if not path.is_file():
                raise ConfigError(f"'prompts_file' {str(path)!r} does not exist; pass a text file, one prompt per line")
            self.prompts = [*self.prompts, *(line.strip() for line in path.read_text().splitlines() if line.strip())]
        if not self.prompts:
            raise ConfigError("transfer needs prompts; pass --transfer-prompts-file FILE or --transfer-prompts TEXT")


class TransferAttack:
    def __init__(self, config: TransferConfig):
        self.config = config

    def run(self, victim, instance: Instance, context: Context) -> Adversary:
        if not victim.has_text:
            raise ConfigError("transfer replays prompts; this class-conditional model takes labels")
        prompt = self.config.prompts[instance.index % len(self.config.prompts)]
        return Adversary(prompt, decoded=prompt)


register_attack("random", RandomConfig, RandomAttack, threat_model="prompt")
register_attack("seed_search", SeedSearchConfig, SeedSearchAttack, threat_model="seed")
register_attack("transfer", TransferConfig, TransferAttack, threat_model="transfer", needs=("text",))
