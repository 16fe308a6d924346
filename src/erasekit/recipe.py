"""The configs of one erase: one dataclass per concern, filled from a YAML recipe, a mapping, config objects
and flags (in the manner of trl's parser), and checked against each other and the model's family.

| role | dataclass | module |
|---|---|---|
| run | `EraseConfig`: model, output, method, evaluation | here |
| train | `TrainConfig`: optimisation, checkpoints | `erase.trainer` |
| data | `ClassDataConfig`: classes or samples to forget (class-conditional) | `erase.class_data` |
| concept | `TextConceptConfig`: prompts and their images (text-to-image) | `erase.text` |
| refine | `RefineConfig`: RUM stages | `erase.rum` |
| adversarial | `AdversarialConfig`: attack rounds inside the erase | `adversarial` |
| method | the method's own config | `erase.methods.<name>` |
| eval | `Sampling`: how the evaluation samples | `eval.suite` |
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .adversarial import AdversarialConfig
from .attacks import get_attack
from .config import build_configs, check, load_yaml
from .erase.class_data import ClassDataConfig
from .erase.methods import METHODS, get_method
from .erase.rum import RefineConfig
from .erase.text import TextConceptConfig
from .erase.trainer import TrainConfig
from .errors import ConfigError
from .eval.suite import Sampling
from .io import portable
from .pipelines.inference import DTYPES

logger = logging.getLogger(__name__)


@dataclass
class EraseConfig:
    """What to erase from which model with which method, and where the result goes."""

    pretrained_model_name_or_path: str = field(default="bundled:digits-cfg", metadata={"help": "base model"})
    revision: str | None = field(default=None, metadata={"help": "Hub revision of the base model"})
    variant: str | None = field(default=None, metadata={
        "help": "weights variant of the base model to load, e.g. fp16; null: the plain files (or a folder's only "
                "variant). The erased model keeps every file set the base has"})
    dtype: str | None = field(default=None, metadata={
        "help": "dtype the frozen parts are loaded in: fp32, fp16 or bf16, whatever their configs say (the trained "
                "weights are float32 master weights); null: float32 on CPU, the denoiser's stored dtype on GPU"})
    allow_pickle: bool = field(default=False, metadata={
        "help": "also load pickle-based weights (.ckpt, .bin): they can run code; only for trusted files"})
    output_dir: str | None = field(default=None, metadata={"help": "directory of the erased model (required)"})
    method: str = field(default="salun", metadata={
        "help": "registered method; `erasekit erase --method NAME --help` lists its settings"})
    evaluate: bool = field(default=True, metadata={"help": "evaluate base and erased models after training"})
    eval_suite: str | None = field(default=None, metadata={
        "help": "text-to-image: suite file whose judges (metrics, thresholds, CLIP model) score the erase's forget "
                "and retain prompts, e.g. configs/eval/nudity.yaml; in a recipe, relative to the recipe's folder"})
    save_dtype: str | None = field(default=None, metadata={
        "help": "dtype of the saved UNet: fp32, fp16 or bf16; null keeps the base's (frozen parts always do)"})
    attacks: list[str] = field(default_factory=list, metadata={
        "help": "attacks run on the erased model and its base after the evaluation, at their default budgets "
                "(`erasekit attack --help`); their ASR goes into erasure.json and the model card"})
    attack_instances: int = field(default=8, metadata={"help": "instances of each of those attacks"})
    attack_concept_images: str | None = field(default=None, metadata={
        "help": "folder of real concept images for those attacks; null: the bundled digits' held-out images"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output_dir"})

    def __post_init__(self):
        check(self.save_dtype in (None, *DTYPES), "save_dtype", self.save_dtype, f"one of {', '.join(DTYPES)} or null")
        check(self.dtype in (None, *DTYPES), "dtype", self.dtype, f"one of {', '.join(DTYPES)} or null")
        check(bool(self.output_dir), "output_dir", self.output_dir, "a directory path")
        check(self.attack_instances >= 1, "attack_instances", self.attack_instances, ">= 1")
        for name in self.attacks:
            get_attack(name)
        if self.eval_suite is not None and not Path(self.eval_suite).is_file():
            raise ConfigError(f"'eval_suite' is '{self.eval_suite}', which is not a file; give a suite YAML such as "
                              f"configs/eval/nudity.yaml (in a recipe, relative to the recipe's folder)")


# The roles of an erase's configs (the method's role is filled by the registered method's config).
ROLES: dict[str, type] = {"run": EraseConfig, "train": TrainConfig, "data": ClassDataConfig,
                          "concept": TextConceptConfig, "refine": RefineConfig, "adversarial": AdversarialConfig,
                          "eval": Sampling}
# Sampling keys that also set a text-to-image erase's own evaluation (see `evaluation.text_erase_suite`).
SHARED_SAMPLING_KEYS = ("num_inference_steps", "guidance_scale", "eval_batch_size")
# Keys that apply to one model family only; a key of the other family is refused, never ignored.
CLASS_CONDITIONAL_KEYS = (*(f.name for f in fields(ClassDataConfig)), "target_label",
                          *(f.name for f in fields(Sampling) if f.name not in SHARED_SAMPLING_KEYS))
TEXT_TO_IMAGE_KEYS = tuple(f.name for f in fields(TextConceptConfig))
MASK_KEYS = ("saliency_guidance", "saliency_batch_size", "saliency_passes")


@dataclass
class Configs:
    run: EraseConfig
    train: TrainConfig
    data: ClassDataConfig
    concept: TextConceptConfig
    refine: RefineConfig
    adversarial: AdversarialConfig
    eval: Sampling
    method: Any
    given: frozenset[str] = frozenset()  # keys set by the config file, objects or flags
    from_cli: frozenset[str] = frozenset()  # keys set by flags

    def check_family(self, family: str, model: str) -> None:
        """Refuse keys that do not apply to `family` ("class-conditional" or "text-to-image")."""
        foreign = TEXT_TO_IMAGE_KEYS if family == "class-conditional" else CLASS_CONDITIONAL_KEYS
        bad = sorted(self.given & set(foreign))
        if bad:
            other = "text-to-image" if family == "class-conditional" else "class-conditional"
            if family == "text-to-image":
                hint = "" if self.concept.forget_prompts else "; name the concept with 'forget_prompts'"
            else:
                hint = "; name the classes with 'forget'"
            raise ConfigError(f"'{bad[0]}' applies to {other} models only, but '{model}' is {family}; remove "
                              f"'{bad[0]}' from the config or flags{hint}")
        self.adversarial.check_family(family)
        if family == "text-to-image" and self.refine.needs_digits:
            raise ConfigError(f"'refine_proxy: {self.refine.refine_proxy}' reads the digits training run and split, "
                              f"which '{model}' (text-to-image) has not; use loss, cfg_gain or cond_magnitude")
        if getattr(self.method, "mask_path", None):
            bad = sorted(self.from_cli & set(MASK_KEYS))
            if bad:
                raise ConfigError(f"'{bad[0]}' computes a mask, but 'mask_path' gives a saved one; drop one of them")

    def check_method_supports(self, base) -> None:
        """Refuse a method on a model family it does not work on, before any data or training."""
        method_cls = get_method(self.run.method).method
        supported = getattr(method_cls, "pipelines", None)
        if supported and not any(c.__name__ in supported for c in type(base).__mro__):
            raise ConfigError(f"method '{self.run.method}' supports {method_cls.supported_models}, but "
                              f"'{portable(self.run.pretrained_model_name_or_path)}' is a {type(base).__name__}; "
                              f"choose salun, rl, esd or ga")

    def recorded(self, class_conditional: bool) -> dict[str, Any]:
        """Every config value that applies to the model's family, by role."""
        roles = ["run", "train", "data" if class_conditional else "concept", "refine", "adversarial", "method", "eval"]
        foreign = set(TEXT_TO_IMAGE_KEYS if class_conditional else CLASS_CONDITIONAL_KEYS)
        return {role: {k: v for k, v in dataclasses.asdict(getattr(self, role)).items() if k not in foreign}
                for role in roles}


def _check_across(cfg: Configs, values: Mapping[str, Any]) -> None:
    """Rules that join two concerns."""
    data, refine = cfg.data, cfg.refine
    if data.forget_samples is not None:
        if "forget" not in values:
            data.forget = []
        if data.forget:
            raise ConfigError(f"'forget' is {data.forget} but 'forget_samples' is set: sample unlearning forgets "
                              f"images of every class; set forget: [] (--forget '[]') or drop 'forget_samples'")
        for key in ("target_label", "remap"):
            if getattr(cfg.method, key, None) not in (None, "random"):
                raise ConfigError(f"'{key}' is {getattr(cfg.method, key)!r}, but with 'forget_samples' each forget "
                                  f"image is remapped to a random other class; drop '{key}' or set remap: random")
    if refine.needs_digits:
        check(data.data == "digits", "data", data.data, f"'digits' with 'refine_proxy: {refine.refine_proxy}' (it "
              f"needs the training split's positions and the held-out test split)")
    if cfg.adversarial.adversarial_rounds:
        method = get_method(cfg.run.method).method
        if refine.refine or data.forget_samples is not None or getattr(method, "edit", None) is not None:
            what = "'refine: rum'" if refine.refine else "sample unlearning ('forget_samples')" \
                if data.forget_samples is not None else f"method '{cfg.run.method}' (a closed-form edit)"
            raise ConfigError(f"'adversarial_rounds' is {cfg.adversarial.adversarial_rounds}, but {what} trains no "
                              f"steps to put attack rounds between; set adversarial_rounds: 0"
                              + (" (uce has its own closed-form rounds: rece_rounds)" if cfg.run.method == "uce" else ""))
    if refine.refine and (cfg.train.checkpointing_steps or cfg.train.resume_from_checkpoint):
        raise ConfigError("'refine: rum' runs several stages and does not checkpoint or resume yet; drop "
                          "'checkpointing_steps' and 'resume_from_checkpoint'")


def resolve_configs(config: str | os.PathLike | Mapping | None, overrides: Mapping[str, Any],
                    from_cli: frozenset[str] = frozenset()) -> Configs:
    """Merge a YAML file (or mapping) with overrides into the configs of every role."""
    if config is None:
        values, source = {}, "arguments"
    elif isinstance(config, Mapping):
        values, source = dict(config), "config"
    else:
        values, source = load_yaml(config), str(config)
        if isinstance(values.get("eval_suite"), str):  # a recipe names its suite relative to itself
            values["eval_suite"] = str(Path(config).parent / values["eval_suite"])
    values.update(overrides)
    method = values.get("method", "salun")
    if not isinstance(method, str):
        raise ConfigError(f"{source}: 'method' must be a string, got {method!r}")
    roles = {**ROLES, "method": get_method(method).config}
    values = set_aside_other_methods(values, roles, method, source, from_cli)
    configs = Configs(**build_configs(roles, values, source, from_cli), given=frozenset(values),
                      from_cli=frozenset(from_cli))
    _check_across(configs, values)
    return configs


def set_aside_other_methods(values: dict, roles: dict, method: str, source: str, from_cli: frozenset) -> dict:
    """A recipe's keys that belong to other methods only (a SalUn recipe's `ratio` when `--method esd` is
    given) are set aside with one notice; given as flags, they are refused, naming their methods."""
    owned = {f.name for cls in roles.values() for f in fields(cls)}
    owners: dict[str, list[str]] = {}
    for name, spec in METHODS.items():
        for f in fields(spec.config):
            if f.name not in owned:
                owners.setdefault(f.name, []).append(name)
    flagged = sorted(k for k in values if k in owners and k in from_cli)
    if flagged:
        key = flagged[0]
        raise ConfigError(f"'{key}' is a setting of {', '.join(owners[key])}, not of method '{method}'; drop "
                          f"--{key.replace('_', '-')} or choose one of those methods")
    aside = sorted(k for k in values if k in owners)
    if aside:
        logger.warning(f"{source}: set aside for method '{method}' (settings of other methods): {', '.join(aside)}")
    return {k: v for k, v in values.items() if k not in aside}


def method_name(config: Any) -> str:
    """The registered name of a method config object."""
    for name, spec in METHODS.items():
        if type(config) is spec.config:
            return name
    raise ConfigError(f"{type(config).__name__} is not the config of a registered method; pass one of "
                      f"{', '.join(spec.config.__name__ for spec in METHODS.values())}")


def values_of(*objects: Any) -> dict[str, Any]:
    """The fields of config objects that differ from their class's defaults, as flat config keys (so an
    object and the YAML keys it stands for build the same configs)."""
    out: dict[str, Any] = {}
    for obj in objects:
        if obj is None:
            continue
        if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
            raise ConfigError(f"expected a config object such as EraseConfig(...), got {obj!r}")
        default = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                   for f in fields(obj) if f.init}
        for name in default:
            if getattr(obj, name) != default[name]:
                out[name] = getattr(obj, name)
    return out

