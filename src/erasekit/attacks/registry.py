"""The attack protocol and registry, in the manner of the method registry; it imports no attack.

An attack is built from its config dataclass and gives one function:
`run(victim, instance, context) -> Adversary`: what the attack found for one instance (a prompt, learned
embeddings, a label row, a seed, or a denoising trajectory), which the runner then generates from on
the evaluation seeds and judges. `context.check(adversary)` generates on the *selection* seeds (never the
evaluation seeds) and says whether the judge sees the concept: attacks stop early on it.

`threat_model` says what the attacker controls: `prompt` (real text typed into the pipeline), `embedding`
(vectors fed to the text encoder or the label table), `encoder-only` (a prompt found with the text
encoder alone, then typed into the pipeline: a transfer attack), `image` (a starting image: no text), `seed`
(the starting noise), `transfer` (prompts found elsewhere, replayed). `needs` lists what an attack
needs of the model: `text` (a text encoder), `baseline` (the base model's predictions).
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import ConfigError

THREAT_MODELS = ("prompt", "embedding", "encoder-only", "image", "seed", "transfer")


class AttackSpec(NamedTuple):
    config: type
    attack: type
    description: str
    threat_model: str
    needs: tuple[str, ...]


ATTACKS: dict[str, AttackSpec] = {}


def register_attack(name: str, config_cls: type, attack_cls: type, threat_model: str,
                    needs: tuple[str, ...] = (), description: str | None = None) -> None:
    """Register `attack_cls` (built from a `config_cls` instance) under `name`."""
    if threat_model not in THREAT_MODELS:
        raise ValueError(f"attack {name!r}: threat_model must be one of {', '.join(THREAT_MODELS)}")
    if not callable(getattr(attack_cls, "run", None)):
        raise TypeError(f"attack {name!r}: {attack_cls.__name__} defines no run(victim, instance, context)")
    line = description or (config_cls.__doc__ or name).strip().splitlines()[0]
    ATTACKS[name] = AttackSpec(config_cls, attack_cls, line, threat_model, tuple(needs))


def get_attack(name: str) -> AttackSpec:
    if name not in ATTACKS:
        raise ConfigError(f"'attack' is {name!r}; registered attacks: {', '.join(sorted(ATTACKS))}; "
                          "fix --attack")
    return ATTACKS[name]
