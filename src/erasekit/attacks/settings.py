"""`AttackRun`: what is attacked, with what, judged how, written where; and each attack's own config.

In a YAML file the run's keys are top-level and each attack's are a mapping under its name
(`cce: {steps: 200}`); on the command line an attack's key is prefixed by its name (`--cce-steps 200`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import build_configs, check, field_types, load_yaml
from ..errors import ConfigError
from .registry import ATTACKS, get_attack


@dataclass
class AttackRun:
    """The models, the concept, the instances and the judge of one `erasekit attack`."""

    model: str | None = field(default=None, metadata={"help": "the erased model (directory, Hub id, bundled:NAME)"})
    attack: list[str] = field(default_factory=list, metadata={"help": "attack names (repeat the flag for several)"})
    baseline: str | None = field(default=None, metadata={
        "help": "the base model, attacked as a sanity check; null: the base named in the model's erasure.json"})
    attack_base: bool = field(default=True, metadata={
        "help": "also attack the base model (false: the erased and reference models only)"})
    reference: str | None = field(default=None, metadata={
        "help": "a model retrained without the concept: excess ASR = erased - reference"})
    forget: list[int] = field(default_factory=list, metadata={"help": "class-conditional: the erased labels"})
    forget_prompts: list[str] = field(default_factory=list, metadata={"help": "text-to-image: the erased prompts"})
    concept_images: str | None = field(default=None, metadata={
        "help": "folder of real concept images; null: the bundled digits' held-out images of the concept"})
    output: str | None = field(default=None, metadata={"help": "report directory"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing report directory"})
    seed: int = field(default=0, metadata={"help": "seed of every attack's randomness"})
    instances: int = field(default=8, metadata={"help": "instances (prompt or label, concept images, seeds)"})
    images_per_instance: int = field(default=8, metadata={"help": "concept images each instance may use"})
    eval_images: int = field(default=4, metadata={"help": "images judged per instance (evaluation seeds)"})
    select_images: int = field(default=2, metadata={"help": "images an attack may judge to stop early (other seeds)"})
    success_share: float = field(default=0.5, metadata={
        "help": "an instance succeeds when at least this share of its evaluation images shows the concept"})
    eval_seed: int = field(default=50_000, metadata={
        "help": "evaluation seeds of instance i: eval_seed + i*eval_images + j; selection seeds start 10^6 later"})
    num_inference_steps: int | None = field(default=None, metadata={"help": "sampler steps; null: the family's"})
    guidance_scale: float | None = field(default=None, metadata={"help": "CFG scale; null: the family's"})
    judge: str | None = field(default=None, metadata={
        "help": "classifier, clip or nudenet; null: the suite's first metric, else classifier"})
    suite: str | None = field(default=None, metadata={"help": "eval suite YAML whose judge settings are used"})
    concept_label: int | None = field(default=None, metadata={
        "help": "the classifier's label of the concept; null: the forget label, or the digit a prompt names"})
    classifier: str = field(default="bundled:digits-classifier", metadata={"help": "classifier judge"})

    def __post_init__(self):
        if not self.model:
            raise ConfigError("'model' is missing; pass --model DIR_OR_ID")
        if not self.output:
            raise ConfigError("'output' is missing; pass --output DIR")
        if not self.attack:
            raise ConfigError(f"no attack given; pass --attack NAME (registered: {', '.join(sorted(ATTACKS))})")
        for name in self.attack:
            get_attack(name)
        check(bool(self.forget) != bool(self.forget_prompts), "forget", self.forget,
              "given for a class-conditional model, or --forget-prompts for a text-to-image model (one of them)")
        for key in ("instances", "images_per_instance", "eval_images", "select_images"):
            check(getattr(self, key) >= 1, key, getattr(self, key), ">= 1")
        check(0 < self.success_share <= 1, "success_share", self.success_share, "in (0, 1]")
        check(self.judge in (None, "classifier", "clip", "nudenet"), "judge", self.judge,
              "classifier, clip, nudenet or null")


def attack_flag_fields(name: str) -> list[tuple]:
    """`--<name>-<key>` flags of one attack's config, for --help (the attack's name prefixes each key)."""
    spec = get_attack(name)
    own = []
    for f, tp in field_types(spec.config):
        default = ({"default": f.default} if f.default is not dataclasses.MISSING
                   else {"default_factory": f.default_factory})
        own.append((f"{name}_{f.name}", tp, field(metadata=f.metadata, **default)))
    return field_types(dataclasses.make_dataclass(f"{name}_flags", own))


def attack_help_groups() -> list[tuple[str, list[tuple]]]:
    """`erasekit attack --help`: the run's keys, then each attack's, in groups."""
    groups = [("what to attack, judged how", field_types(AttackRun))]
    for name, spec in ATTACKS.items():
        groups.append((f"attack {name} ({spec.threat_model}): {spec.description.partition(': ')[2]}",
                       attack_flag_fields(name)))
    return groups


def attacks_epilog(list_help: str) -> str:
    width = max(len(name) for name in ATTACKS)
    lines = [f"  {name:<{width}}  [{spec.threat_model}] {spec.description.partition(': ')[2]}"
             for name, spec in ATTACKS.items()]
    return ("attacks (--attack NAME, repeat for several; an attack's settings are --NAME-KEY, or a mapping under "
            "its name in --config):\n" + "\n".join(lines) + "\n\n" + list_help)


def flatten_yaml(values: Mapping[str, Any]) -> dict[str, Any]:
    """A YAML file's attack sections (`cce: {steps: 200}`) as prefixed keys (`cce_steps: 200`)."""
    out = {}
    for key, value in values.items():
        if key in ATTACKS and isinstance(value, Mapping):
            out.update({f"{key}_{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def resolve_attack_configs(path: str | None, values: Mapping[str, Any], raw: frozenset = frozenset()):
    """(AttackRun, {attack: config}) from an optional YAML file and flags (flags win)."""
    merged = {**(flatten_yaml(load_yaml(path)) if path else {}), **values}
    source = f"{path} and the command line" if path else "command line"
    run_keys = {f.name for f in dataclasses.fields(AttackRun)}
    per_attack: dict[str, dict] = {name: {} for name in ATTACKS}
    rest = {}
    for key, value in merged.items():
        owner = next((n for n in sorted(ATTACKS, key=len, reverse=True) if key.startswith(n + "_")), None)
        if key not in run_keys and owner:
            per_attack[owner][key.removeprefix(owner + "_")] = (value, key in raw)
        else:
            rest[key] = value
    run = build_configs({"run": AttackRun}, rest, source, raw)["run"]
    configs = {}
    for name in run.attack:
        own = {k: v for k, (v, _) in per_attack[name].items()}
        cli = frozenset(k for k, (_, from_cli) in per_attack[name].items() if from_cli)
        configs[name] = build_configs({name: get_attack(name).config}, own, f"{source} ({name} settings)", cli)[name]
    unused = [(n, f"{n}_{k}") for n, keys in per_attack.items() if n not in run.attack for k in keys]
    if unused:
        raise ConfigError(f"settings {', '.join(k for _, k in unused)} belong to attacks not run here; add "
                          f"--attack {unused[0][0]} or drop them")
    return run, configs
