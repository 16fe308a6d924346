"""The last step of `erase`: the one evaluator on the erased model beside its base, into `report/`.

Class-conditional models are sampled at every class with the run's `Sampling`; text-to-image models at
the erase's forget prompts and four retain prompts, judged as the recipe's `eval_suite` says; a sample
unlearning run gets the loss-based membership test instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from .attacks import AttackRun, get_attack
from .attacks.registry import ATTACKS
from .attacks.run import attack_victims, prepare
from .attacks.victim import Victim
from .erase.build_task import sample_task
from .erase.membership import membership_metrics
from .errors import ConfigError
from .eval.evaluate import EvalReport, Process, evaluate_pipes
from .eval.evaluate import evaluate as evaluate_suite
from .eval.report import format_summary
from .eval.suite import EvalSuite, build_records, load_suite
from .io import fingerprint_state_dict, portable, write_json, write_text
from .pipelines.adapters import adapter_for
from .pipelines.inference import torch_dtype
from .recipe import Configs

logger = logging.getLogger(__name__)

# The judge settings an erase takes from its `eval_suite`; the prompts are the erase's own.
JUDGE_KEYS = ("metrics", "nudenet_threshold", "clip_model", "clip_pretrained", "concept", "alternatives",
              "classifier", "classifier_weights", "class_ids", "allow_pickle")
MEMBERSHIP_KEYS = ("mia_auc", "mia_auc_retain", "loss_forget", "loss_retain", "loss_test")


def evaluate_erase(cfg: Configs, erased, base, concept: dict, staging: Path, metrics: dict,
                   accelerator) -> Path | None:
    """Evaluate `erased` beside `base` into `staging/report`, add before/after to `metrics`, and return the
    report's path (None when `evaluate: false`)."""
    if not cfg.run.evaluate:
        return None
    if cfg.data.forget_samples is not None:
        return evaluate_membership(cfg, erased, base, staging, metrics, accelerator)
    adapter = adapter_for(erased)
    if adapter.family == "class-conditional":
        suite = EvalSuite(**dataclasses.asdict(cfg.eval), name="erase", forget=concept["forget_classes"],
                          grid_prompts=adapter.num_classes, grid_seeds=10)
    else:
        suite = text_erase_suite(cfg, concept)
    identity = {"model": portable(str(cfg.run.output_dir)), "baseline": portable(cfg.run.pretrained_model_name_or_path),
                "fingerprints": {"base": fingerprint_state_dict(adapter_for(base).denoiser.state_dict()),
                                 "model": fingerprint_state_dict(adapter.denoiser.state_dict())}}
    report = evaluate_pipes({"base": base, "model": erased}, suite, staging / "report", identity,
                            Process(device=accelerator.device), torch_dtype(accelerator.mixed_precision))
    classes = report["metrics"].get("classes")
    if classes:
        metrics.update(before=classes["base"], after=classes["model"])
    else:
        metrics.update(text_metrics(report["metrics"]))
    logger.info(format_summary(report))
    return staging / "report" / "report.md"


ATTACK_KEYS = ("attack", "role", "threat_model", "asr", "pre_asr", "n", "ci95")


def check_erase_attacks(cfg: Configs, base) -> None:
    """Refuse, before any training, `attacks` that could not run on this erase at its end."""
    run = cfg.run
    if not run.attacks:
        return
    text = adapter_for(base).family != "class-conditional"
    for name in run.attacks:
        if "text" in get_attack(name).needs and not text:
            raise ConfigError(f"'attacks' lists '{name}', which needs a text encoder; this model is class-conditional "
                              "(use cce, soft, trajectory, random or seed_search)")
    if text and run.eval_suite and not run.attack_concept_images:
        raise ConfigError("'attacks' on a text-to-image erase judged by its eval_suite need real concept images; "
                          "set 'attack_concept_images' to a folder of them")


def attack_erase(cfg: Configs, erased, base, concept: dict, staging: Path, metrics: dict) -> None:
    """The run's `attacks` on the erased model and its base, at their default budgets, into
    `staging/attacks`; their summary rows go to `metrics["attacks"]` (and so to the card)."""
    run = cfg.run
    settings = AttackRun(model=str(run.output_dir), baseline=str(run.pretrained_model_name_or_path),
                         attack=list(run.attacks), instances=run.attack_instances, output=str(staging / "attacks"),
                         forget=list(concept.get("forget_classes") or []),
                         forget_prompts=list(concept.get("forget_prompts") or []),
                         suite=run.eval_suite, concept_images=run.attack_concept_images, num_inference_steps=cfg.eval.num_inference_steps,
                         guidance_scale=cfg.eval.guidance_scale)
    victims = {"erased": Victim(erased, "erased", settings.model, settings.num_inference_steps,
                                settings.guidance_scale),
               "base": Victim(base, "base", settings.baseline, settings.num_inference_steps, settings.guidance_scale)}
    report = attack_victims(settings, {name: get_attack(name).config() for name in run.attacks}, victims)
    metrics["attacks"] = [{k: row[k] for k in ATTACK_KEYS} for row in report["attacks"]]


class SuiteAttacks:
    """An eval suite's `attacks`: on the evaluated model (role erased), its baseline (base) and the suite's
    `attack_reference`, at each attack's default budget, judged by the suite's first metric, into the
    eval's `attacks/` folder (resumed with the eval)."""

    def run_settings(self, pipes: dict, suite: EvalSuite, output: Path, identity: dict) -> AttackRun:
        adapter = adapter_for(pipes["model"])
        text = adapter.family != "class-conditional"
        targets = sorted({r.prompt for r in build_records(suite, adapter) if r.group == "target"}) if text else []
        if text and not targets:
            raise ConfigError("the suite's 'attacks' need its target prompts; set 'prompts' (or 'prompts_csv')")
        if not text and not suite.forget:
            raise ConfigError("the suite's 'attacks' need the erased classes; set 'forget' (e.g. --forget 3)")
        return AttackRun(model=identity["model"], attack=list(suite.attacks), baseline=identity.get("baseline"),
                         attack_base="base" in pipes,
                         reference=suite.attack_reference, forget=[] if text else list(suite.forget),
                         forget_prompts=targets, concept_images=suite.attack_concept_images, output=str(output),
                         instances=suite.attack_instances, num_inference_steps=suite.num_inference_steps,
                         guidance_scale=suite.guidance_scale, classifier=suite.classifier,
                         judge=suite.metrics[0] if suite.metrics else ("clip" if text else "classifier"))

    reference: Victim | None = None  # loaded once, by `check`, before anything is generated

    def victims(self, pipes: dict, run: AttackRun, device=None) -> dict[str, Victim]:
        roles = {"erased": ("model", run.model), "base": ("base", run.baseline)}
        out = {role: Victim(pipes[side], role, source, run.num_inference_steps, run.guidance_scale, device)
               for role, (side, source) in roles.items() if side in pipes}
        if run.reference:
            if self.reference is None:
                self.reference = Victim.load(run.reference, "reference", run.num_inference_steps,
                                             run.guidance_scale, device or "cpu")
            out["reference"] = self.reference
        return out

    def check(self, pipes: dict, suite: EvalSuite) -> None:
        unknown = [name for name in suite.attacks if name not in ATTACKS]
        if unknown:
            raise ConfigError(f"the suite's 'attacks' lists '{unknown[0]}', which is not an attack; registered: "
                              f"{', '.join(sorted(ATTACKS))} (fix --attacks or the suite file)")
        run = self.run_settings(pipes, suite, Path(os.devnull), {"model": "model", "baseline": "base"})
        configs = {name: get_attack(name).config() for name in run.attack}
        # the reference is loaded here, on the process's device: a missing one or one of another family fails now
        prepare(run, configs, self.victims(pipes, run, Process.current().device), suite)

    def __call__(self, pipes: dict, suite: EvalSuite, folder: Path, process: Process, identity: dict):
        done = folder / "attacks" / "report.json"
        if not done.is_file():  # else finished before the eval was interrupted
            run = self.run_settings(pipes, suite, folder / "attacks", identity)
            attack_victims(run, {name: get_attack(name).config() for name in run.attack},
                           self.victims(pipes, run, process.device), process, suite)
        process.barrier()
        return json.loads(done.read_text())["attacks"] if process.main else None


def evaluate(model, baseline=None, suite: EvalSuite | str | os.PathLike | None = None,
             output_dir: str | os.PathLike | None = None, overwrite: bool = False, variant: str | None = None,
             **settings) -> EvalReport:
    """`erasekit.eval.evaluate.evaluate` (its arguments), with the suite's `attacks` run on the model, the
    baseline and `attack_reference`: their rows in report.json's `attacks`, their outputs in `attacks/`."""
    return evaluate_suite(model, baseline, suite, output_dir, overwrite, variant, attacks=SuiteAttacks(),
                          **settings)


def text_erase_suite(cfg: Configs, concept: dict) -> EvalSuite:
    """The erase's own evaluation of a text-to-image model: its forget prompts (target) and up to four
    retain prompts at seeds 0-3, judged as `eval_suite` says (NudeNet, CLIP), sampled as the data were
    unless `num_inference_steps`, `guidance_scale` or `eval_batch_size` say otherwise."""
    c, s = cfg.concept, cfg.eval
    judges = {k: v for k, v in dataclasses.asdict(load_suite(cfg.run.eval_suite)).items() if k in JUDGE_KEYS} \
        if cfg.run.eval_suite else {"metrics": []}
    return EvalSuite(name="erase", prompts=list(concept["forget_prompts"]),
                     retain_prompts=list(concept["retain_prompts"])[:4], seeds=[0, 1, 2, 3],
                     num_inference_steps=s.num_inference_steps or c.generation_steps,
                     guidance_scale=s.guidance_scale or c.generation_guidance,
                     eval_batch_size=s.eval_batch_size or c.generation_batch_size, resolution=c.resolution,
                     grid_prompts=8, grid_seeds=4, dtype=cfg.run.dtype, **judges)


def text_metrics(metrics: dict) -> dict:
    """`before`/`after` of a text-to-image erase: each group's figures per side, and the collateral ones."""
    out: dict[str, Any] = {side: {group: metrics[group][key] for group in ("target", "retain", "paraphrase")
                                  if group in metrics} for side, key in (("before", "base"), ("after", "model"))}
    if "collateral" in metrics:
        out["collateral"] = metrics["collateral"]
    return out


def evaluate_membership(cfg: Configs, erased, base, staging: Path, metrics: dict, accelerator) -> Path:
    """Sample unlearning: the loss-based membership test on the base and the unlearned model, side by
    side, into report/membership.json and report/report.md."""
    task, (test_x, test_c) = sample_task(cfg.data, cfg.train.seed, base)
    rows = {}
    for name, pipe in (("base", base), ("model", erased)):
        denoiser = adapter_for(pipe).denoiser.to(accelerator.device)
        rows[name] = membership_metrics(denoiser, task, test_x, test_c)
        denoiser.to("cpu")
    metrics.update(before=rows["base"], after=rows["model"])
    (staging / "report").mkdir(exist_ok=True)
    write_json(staging / "report" / "membership.json", rows, overwrite=True)
    lines = ["# Membership test", "", f"{rows['base']['n_forget']} forget images, {rows['base']['n_test']} held-out "
             f"test images, {rows['base']['draws']} noise draws each. AUC: P(forget loss < test loss); 0.5 = the "
             "forget images look like unseen ones.", "", "| metric | base | model |", "|---|---|---|",
             *[f"| {k} | {rows['base'][k]:.4f} | {rows['model'][k]:.4f} |" for k in MEMBERSHIP_KEYS], ""]
    write_text(staging / "report" / "report.md", "\n".join(lines))
    logger.info("\n".join(lines))
    return staging / "report" / "report.md"
