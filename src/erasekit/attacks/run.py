"""`erasekit attack`: every attack against the erased model, the base and the reference, judged alike.

Outputs, built in a staging folder and renamed into place when complete (a killed run continues
from its rows when rerun with the same settings): `attack.jsonl` (one row per attack, model and
instance), `pre.jsonl` (each model without attack), `embeddings/*.safetensors` (learned vectors, in
diffusers' textual-inversion format for text models), `images/` (the first evaluation image of each
row), `grid.png` (per instance: base | erased | erased under each attack | reference under it),
`report.json` (schema `erasekit.eval/v1`, an `attacks` section) and `report.md`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from safetensors.torch import save_file

from ..errors import ConfigError
from ..eval.evaluate import Process
from ..eval.measure import to_pil
from ..eval.suite import EvalSuite, load_suite
from ..io import check_output_free, commit_dir, portable, staging_dir, write_json, write_text
from ..pipelines.loading import resolve_model_path
from ..progress import Progress
from ..version import __version__
from .common import Adversary, Context, Instance
from .instances import build_instances
from .judge import ConceptJudge
from .registry import get_attack
from .report import grid, markdown, summarize, with_controls
from .settings import AttackRun, resolve_attack_configs
from .slots import LabelRow, TextSlots
from .victim import Victim

logger = logging.getLogger("erasekit")
SCHEMA = "erasekit.eval/v1"


def recorded_base(model: str) -> str | None:
    """The base model an erased model's erasure.json names, if it has one."""
    record = Path(resolve_model_path(model)) / "erasure.json"
    return json.loads(record.read_text()).get("base_model") if record.is_file() else None


def load_victims(run: AttackRun, device="cpu") -> dict[str, Victim]:
    base = (run.baseline or recorded_base(run.model)) if run.attack_base else None
    sources = {"erased": run.model, "base": base, "reference": run.reference}
    return {role: Victim.load(src, role, run.num_inference_steps, run.guidance_scale, device)
            for role, src in sources.items() if src}


def check_victims(run: AttackRun, victims: dict[str, Victim]) -> None:
    """One family; the concept named the way the family takes it; prompt attacks only where there is text."""
    erased = victims["erased"]
    if any(v.family != erased.family for v in victims.values()):
        raise ConfigError("the erased, base and reference models must be of one family; " + ", ".join(
            f"{role}: {v.family}" for role, v in victims.items()))
    if erased.has_text and not run.forget_prompts:
        raise ConfigError(f"{run.model} is a text-to-image model; name the concept with --forget-prompts TEXT")
    if not erased.has_text and not run.forget:
        raise ConfigError(f"{run.model} is class-conditional; name the erased labels with --forget LABELS")
    for name in run.attack:
        if "text" in get_attack(name).needs and not erased.has_text:
            raise ConfigError(f"attack '{name}' needs a text encoder and {run.model} is class-conditional (it "
                              "has none); use cce, soft, trajectory, random or seed_search")


def build_judge(run: AttackRun, suite: EvalSuite | None = None) -> ConceptJudge:
    """The judge `run.judge` (else the suite's first metric, else the classifier) with the settings of
    `suite`, else of the `run.suite` file."""
    suite = suite or (load_suite(run.suite) if run.suite else EvalSuite(classifier=run.classifier))
    metric = run.judge or (suite.metrics[0] if suite.metrics else "classifier")
    suite = dataclasses.replace(suite, metrics=[metric])
    if metric == "clip" and not suite.concept:
        raise ConfigError("the clip judge needs the suite's 'concept' (and 'alternatives'); pass --suite FILE")
    return ConceptJudge(suite, metric, run.concept_label)


def read_rows(path: Path) -> list[dict]:
    """The complete rows of a JSON-lines file; a line cut by a kill is dropped from the file too."""
    if not path.is_file():
        return []
    rows, lines = [], path.read_text().splitlines()
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    if len(rows) < len(lines) or not path.read_text().endswith("\n") and rows:
        write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def append_row(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(portable(row)) + "\n")
        f.flush()


class Runner:
    def __init__(self, run: AttackRun, configs: dict, victims: dict[str, Victim], judge: ConceptJudge, instances,
                 staging: Path, process: Process | None = None):
        self.run, self.configs, self.victims, self.judge, self.staging = run, configs, victims, judge, staging
        self.instances = instances
        self.process = process or Process()
        for sub in ("images", "embeddings"):
            (staging / sub).mkdir(exist_ok=True)

    def rows(self, stem: str) -> list[dict]:
        """Every process's rows of `stem` (pre or attack), from a run of any number of processes."""
        return [row for path in sorted(self.staging.glob(f"{stem}*.jsonl")) for row in read_rows(path)]

    def own(self, stem: str) -> Path:
        """This process's file: `stem.jsonl` alone, `stem-<rank>.jsonl` under `accelerate launch`."""
        return self.staging / (f"{stem}.jsonl" if self.process.world == 1 else f"{stem}-{self.process.rank}.jsonl")

    def mine(self, items: list) -> list:
        return [item for k, item in enumerate(items) if k % self.process.world == self.process.rank]

    def judged(self, images, prompt, label) -> tuple[list[dict], float, bool, bool]:
        scores = self.judge(images, str(prompt), label)
        rate = sum(s["success"] for s in scores) / len(scores)
        return scores, rate, rate >= self.run.success_share, any(s["success"] for s in scores)

    def save_first(self, images, stem: str) -> None:
        to_pil(images[0]).save(self.staging / "images" / f"{stem}.png")

    def pre(self) -> dict[tuple[str, int], dict]:
        """Each model without attack on every instance's evaluation seeds (shared out among processes)."""
        path = self.own("pre")
        done = {(r["role"], r["instance"]): r for r in self.rows("pre")}
        items = [(role, victim, instance, label) for role, victim in self.victims.items()
                 for instance, label in self.instances]
        for role, victim, instance, label in self.mine(items):
            if (role, instance.index) not in done:
                images = victim.generate(instance.target, instance.eval_seeds)
                scores, rate, success, _ = self.judged(images, instance.target, label)
                self.save_first(images, f"{role}-plain-{instance.index}")
                append_row(path, {"role": role, "instance": instance.index, "success": success,
                                  "image_rate": rate, "scores": scores})
        self.process.barrier()
        return {(r["role"], r["instance"]): r for r in self.rows("pre")}

    def selection_check(self, victim: Victim, instance: Instance, label):
        def check(adversary: Adversary) -> bool:
            images = victim.generate(adversary.prompt, instance.select_seeds, adversary.injection)
            return self.judged(images, adversary.prompt, label)[2]
        return check

    def save_embedding(self, adversary: Adversary, stem: str) -> str | None:
        injection = adversary.injection
        if isinstance(injection, LabelRow):
            name = f"{stem}.safetensors"
            save_file({f"label_{injection.label}": injection.vector.contiguous()}, self.staging / "embeddings" / name,
                      metadata={"format": "erasekit label row", "label": str(injection.label)})
            return f"embeddings/{name}"
        if isinstance(injection, TextSlots):
            first = next(iter(injection.vectors))
            for encoder, vectors in injection.vectors.items():
                name = f"{stem}.safetensors" if encoder == first else f"{stem}-{encoder}.safetensors"
                save_file({f"<{stem}>": vectors.contiguous()}, self.staging / "embeddings" / name,
                          metadata={"format": "diffusers textual inversion", "text_encoder": encoder,
                                    "placeholder_words": " ".join(injection.words)})
            return f"embeddings/{stem}.safetensors"
        return None

    def attack_row(self, name: str, role: str, instance: Instance, label, pre: dict) -> dict:
        spec = get_attack(name)
        victim = self.victims[role]
        context = Context(self.victims.get("base"), self.selection_check(victim, instance, label))
        started = time.time()
        adversary = spec.attack(self.configs[name]).run(victim, instance, context)
        wall = time.time() - started
        images = adversary.images or victim.generate(adversary.prompt, instance.eval_seeds, adversary.injection)
        scores, rate, success, any_hit = self.judged(images, adversary.prompt, label)
        stem = f"{role}-{name}-{instance.index}"
        self.save_first(images, stem)
        return {"attack": name, "role": role, "instance": instance.index, "target": instance.target, "label": label,
                "threat_model": adversary.threat_model or spec.threat_model, "image_ids": list(instance.image_ids),
                "eval_seeds": list(instance.eval_seeds), "prompt": adversary.prompt,
                "adversarial_ids": adversary.ids, "decoded": adversary.decoded, "round_trip": adversary.round_trip,
                "pre_success": pre[(role, instance.index)]["success"],
                "post_success": any_hit if adversary.any_of else success, "post_image_rate": rate,
                "post_scores": scores, "steps": adversary.steps, "wall_s": round(wall, 3),
                "embedding": self.save_embedding(adversary, stem), **adversary.extra}

    def attack_all(self, pre: dict) -> list[dict]:
        """Every attack on every model and instance (shared out among processes); all rows, on return."""
        path = self.own("attack")
        done = {(r["attack"], r["role"], r["instance"]) for r in self.rows("attack")}
        items = [(name, role, inst, label) for name in self.run.attack for role in self.victims
                 for inst, label in self.instances]
        todo = [item for item in self.mine(items) if (item[0], item[1], item[2].index) not in done]
        total = len(self.mine(items))
        with Progress(total, "attack", initial=total - len(todo), unit="instance", enabled=self.process.main) as bar:
            for name, role, instance, label in todo:
                append_row(path, self.attack_row(name, role, instance, label, pre))
                bar.update(1, attack=name, role=role)
        self.process.barrier()
        return self.rows("attack")


def open_staging(run: AttackRun, configs: dict, process: Process) -> Path:
    """The staging folder of `run.output`; one left by a killed run with the same settings is continued."""
    output = check_output_free(run.output, run.overwrite, "output")
    staging = staging_dir(output)
    settings = json.loads(json.dumps(settings_of(run, configs), default=str))
    marker = staging / "attack-settings.json"
    if not process.main:
        process.barrier()  # the main process checks and creates it
        return staging
    if marker.is_file():
        if json.loads(marker.read_text()) != settings:
            raise ConfigError(f"an interrupted attack run with other settings is in {staging}; delete it, or rerun "
                              "the same command to continue it")
        logger.info(f"continuing the interrupted attack run in {staging}")
    else:
        staging.mkdir(parents=True, exist_ok=True)
        write_json(marker, settings)
    process.barrier()
    return staging


def settings_of(run: AttackRun, configs: dict) -> dict:
    keep = {k: v for k, v in dataclasses.asdict(run).items() if k not in ("overwrite",)}
    return {"run": keep, "attacks": {name: dataclasses.asdict(c) for name, c in configs.items()}}


def build_report(runner: Runner, rows: list[dict], configs: dict) -> dict:
    run = runner.run
    summaries = []
    for name in run.attack:
        for role in runner.victims:
            mine = [r for r in rows if r["attack"] == name and r["role"] == role]
            threat = mine[0]["threat_model"] if mine else get_attack(name).threat_model
            summaries.append(summarize(mine, name, role, threat, dataclasses.asdict(configs[name])))
    summaries, warnings = with_controls(summaries)
    return {"schema": SCHEMA, "kind": "attack", "erasekit_version": __version__,
            "models": portable({role: v.source for role, v in runner.victims.items()}),
            "family": runner.victims["erased"].family, "judge": runner.judge.describe(),
            "settings": portable(settings_of(run, configs)), "attacks": summaries, "warnings": warnings}


def attack(run: AttackRun | None = None, configs: dict | None = None, *, config_file: str | None = None,
           **keys) -> dict:
    """Run attacks against an erased model, its base and the reference; return the report.

    `erasekit.attack(model="out/", attack=["cce"], forget=[3], output="attacks/", cce_steps=200)`, or
    `erasekit.attack(AttackRun(...), {"cce": CCEConfig(steps=200)})`: `configs` maps attack names to
    config objects (default: each attack's defaults, or the `<attack>_<key>` keys given).
    """
    if run is None:
        run, built = resolve_attack_configs(config_file, keys)
        configs = {**built, **(configs or {})}
    elif keys or config_file:
        raise ConfigError("pass either an AttackRun or keys (model=..., attack=[...]), not both")
    configs = {name: (configs or {}).get(name) or get_attack(name).config() for name in run.attack}
    process = Process.current()
    return attack_victims(run, configs, load_victims(run, process.device), process)


def prepare(run: AttackRun, configs: dict, victims: dict[str, Victim], suite: EvalSuite | None = None):
    """The judge and the instances; refuses, before anything is written, what cannot run."""
    check_victims(run, victims)
    judge = build_judge(run, suite)
    erased = victims["erased"]
    instances = build_instances(run, erased.image_channels(), erased.resolution, judge.metric)
    for name in run.attack:
        check = getattr(configs[name], "check_model", None)
        for target in {instance.target for instance, _ in instances}:
            if check is not None and erased.has_text:
                check(erased.pipe, str(target))
    return judge, instances


def attack_victims(run: AttackRun, configs: dict, victims: dict[str, Victim], process: Process | None = None,
                   suite: EvalSuite | None = None) -> dict:
    """`attack` on models already loaded ({role: Victim}); the erase's and the eval suite's attacks start
    here (`suite`: judge settings given as a suite rather than `run.suite`). Under `accelerate launch`
    every process takes its share of the rows and only the main one writes the report (the others
    return an empty dict)."""
    process = process or Process()
    judge, instances = prepare(run, configs, victims, suite)
    staging = open_staging(run, configs, process)
    runner = Runner(run, configs, victims, judge, instances, staging, process)
    rows = runner.attack_all(runner.pre())
    if not process.main:
        return {}
    report = build_report(runner, rows, configs)
    columns = [(role, f"{role}-plain") for role in ("base", "erased") if role in victims]
    columns += [(f"{role} + {name}", f"{role}-{name}") for name in run.attack for role in ("erased", "reference")
                if role in victims]
    grid(staging, columns, min(4, run.instances)).save(staging / "grid.png")
    report["grid_columns"] = [title for title, _ in columns]
    write_json(staging / "report.json", report)
    write_text(staging / "report.md", markdown(report))
    commit_dir(staging, run.output, run.overwrite)
    return report
