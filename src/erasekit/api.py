"""`erasekit.erase`: load -> build the task -> run the method -> save (pipeline, delta, record, card) ->
evaluate. Each step lives beside what it works on: configs in `recipe`, the task in `erase.build_task`, the
method's run in `stages`, the files in `pipelines.saving`, the record in `record`, the report in
`evaluation`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .adversarial import AdversarialConfig
from .erase.class_data import ClassDataConfig
from .erase.mnemonic import carry_mnemonic
from .erase.rum import RefineConfig
from .erase.text import TextConceptConfig
from .erase.trainer import CHECKPOINT_DIR, TrainConfig, make_accelerator
from .errors import ConfigError
from .eval.suite import Sampling
from .evaluation import attack_erase, check_erase_attacks, evaluate_erase
from .io import commit_dir, discard_dir, fingerprint_state_dict, portable, write_json
from .pipelines.adapters import adapter_for
from .pipelines.inference import dtype_name, torch_dtype
from .pipelines.layout import stored_state
from .pipelines.loading import load_any_pipeline, source_of
from .pipelines.saving import save_erased, write_card
from .recipe import ROLES, Configs, EraseConfig, method_name, resolve_configs, values_of
from .record import erasure_record
from .stages import effective_batch, prepare_staging, run_method

logger = logging.getLogger(__name__)
# Roles whose names are also config keys (ClassDataConfig.data, RefineConfig.refine).
KEY_ROLES = ("data", "refine")


@dataclass
class EraseResult:
    """Where the erased model and its report are, and the metrics before and after."""

    output_dir: Path
    mask_path: Path | None
    report_path: Path | None
    metrics: dict[str, Any]


def load_base(cfg: Configs):
    """The base pipeline, checked against the configs, and its denoiser's weights as stored."""
    run = cfg.run
    base = load_any_pipeline(run.pretrained_model_name_or_path, revision=run.revision, variant=run.variant,
                             allow_pickle=run.allow_pickle, torch_dtype=torch_dtype(run.dtype))
    adapter = adapter_for(base)
    cfg.check_family(adapter.family, portable(run.pretrained_model_name_or_path))
    cfg.check_method_supports(base)
    source = source_of(base)
    base_state = stored_state(source, adapter.denoiser_name) if source else adapter.denoiser.state_dict()
    return base, base_state


def run_erase(cfg: Configs) -> EraseResult:
    """Erase with parsed configs; see `erase` for the public entry point."""
    started, run = time.time(), cfg.run
    staging = prepare_staging(run, cfg.train)
    base, base_state = load_base(cfg)
    check_erase_attacks(cfg, base)
    base_fingerprint = fingerprint_state_dict(base_state)
    accelerator = make_accelerator(cfg.train, staging)
    batch = effective_batch(cfg, accelerator)
    if accelerator.is_main_process and batch:
        logger.info(f"effective batch {batch['total']} = {accelerator.num_processes} process(es) x "
                    f"{batch['per_process']} x {cfg.train.gradient_accumulation_steps} accumulation step(s)")
    denoiser, method, concept, last, refined = run_method(cfg, staging, base, base_state, base_fingerprint,
                                                          accelerator)
    if not accelerator.is_main_process:
        return EraseResult(Path(run.output_dir), None, None, {})
    adapter = adapter_for(base)
    delta = save_erased(staging, base, base_state, denoiser, method.mask, run, base_fingerprint)
    stored = dtype_name(next(iter(base_state.values())).dtype)
    # Evaluated as it is saved: the float32 master weights rounded to the base's stored dtype.
    torch.nn.Module.to(torch.nn.Module.to(denoiser, getattr(torch, stored)), adapter.denoiser.dtype)
    carry_mnemonic(run.pretrained_model_name_or_path, staging)
    metrics: dict[str, Any] = {"train": last, **({"refine": refined} if refined else {})}
    erased = adapter.with_denoiser(denoiser)
    report_path = evaluate_erase(cfg, erased, base, concept, staging, metrics, accelerator)
    if run.attacks:
        attack_erase(cfg, erased, base, concept, staging, metrics)
    record = erasure_record(cfg, base, adapter, denoiser, method, concept, delta, base_fingerprint, stored,
                            accelerator, batch, metrics, round((time.time() - started) / 60, 2))
    write_json(staging / "erasure.json", record)
    write_card(staging, record, base)
    discard_dir(staging / CHECKPOINT_DIR)  # a kill in between finds no half-deleted checkpoint to resume
    commit_dir(staging, run.output_dir, run.overwrite)
    out = Path(run.output_dir)
    final_report = out / report_path.relative_to(staging) if report_path else None
    return EraseResult(out, out / "mask.safetensors" if method.mask is not None else None, final_report, metrics)


def erase(config: str | os.PathLike | Mapping | Any = None, *, run: EraseConfig | None = None,
          train: TrainConfig | None = None, data: ClassDataConfig | None = None,
          concept: TextConceptConfig | None = None, refine: RefineConfig | None = None,
          adversarial: AdversarialConfig | None = None, eval: Sampling | None = None,
          **overrides: Any) -> EraseResult:
    """Erase a concept.

    `erasekit.erase("configs/digits.yaml", forget=[3], output_dir="out")`, or with config objects, as peft
    and trl take them: `erasekit.erase(SalUnConfig(ratio=0.3), run=EraseConfig(output_dir="out"),
    data=ClassDataConfig(forget=[3]))`. Both build the same configs, so they give the same weights.

    Args:
        config: a YAML recipe path, a mapping of config keys, a method's config object (`SalUnConfig`,
            `ESDConfig`, ...; it names the method), or None for the defaults.
        run, train, data, concept, refine, adversarial, eval: config objects of the other roles (see `recipe`); their
            settings that differ from the defaults replace the recipe's. `data` and `refine` are config keys
            too: `data="generated"` or `refine="rum"` sets the key.
        overrides: config keys that replace both.
    """
    objects = {"run": run, "train": train, "data": data, "concept": concept, "refine": refine,
               "adversarial": adversarial, "eval": eval}
    for role in KEY_ROLES:  # `data` and `refine` are also config keys: a value that is no config object is the key's
        if objects[role] is not None and not dataclasses.is_dataclass(objects[role]):
            overrides[role] = objects.pop(role)
    for role, obj in objects.items():
        if obj is not None and not isinstance(obj, ROLES[role]):
            raise ConfigError(f"'{role}' must be a {ROLES[role].__name__}, got {type(obj).__name__}")
    given = values_of(*objects.values())
    if config is not None and not isinstance(config, (str, os.PathLike, Mapping)):
        name = method_name(config)
        if given.get("method", name) != name:
            raise ConfigError(f"run's method is '{given['method']}' but the method config is a "
                              f"{type(config).__name__} ('{name}'); drop one of them")
        given.update(values_of(config), method=name)
        config = None
    return run_erase(resolve_configs(config, {**given, **overrides}))
