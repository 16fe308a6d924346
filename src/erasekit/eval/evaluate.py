"""`erasekit eval`: the one evaluator, for class-conditional and text-to-image models alike.

Records (a class label or a prompt, and a seed) -> the one generation loop, for the model and its
base on identical records (manifest, resume, sharding) -> judges -> pure metrics -> one report
(report.json with schema `erasekit.eval/v1`, results.jsonl, report.md, grid.png).

Generation is sharded across processes (each takes every world-th planned batch and appends to its
own `manifest-<rank>.jsonl`) and resumable: an interrupted eval leaves its hidden staging directory,
and the same command continues it, skipping images already in the manifests.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import PartialState

from ..errors import ConfigError
from ..io import check_output_free, commit_dir, fingerprint_state_dict, portable, staging_dir, write_json
from ..pipelines.adapters import adapter_for
from ..pipelines.generation import generate_to_folder, read_manifest
from ..pipelines.inference import DTYPES, place, safety_checker_record
from ..pipelines.loading import load_any_pipeline
from ..version import __version__
from .class_conditional import REAL_DATA, class_metrics, real_reference
from .clip import ClipScorer
from .measure import Judge, collateral_metrics, group_metrics, load_images, measure_images
from .nudenet import EXPOSED_LABELS, NUDITY_LABELS, NudeNet
from .report import format_summary, write_report
from .suite import GROUPS, EvalSuite, build_records, load_suite

logger = logging.getLogger(__name__)

EVAL_SCHEMA = "erasekit.eval/v1"


@dataclass
class EvalReport:
    """The report.json content and where it was written (None when no output directory was given)."""

    report: dict[str, Any]
    report_dir: Path | None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.report["metrics"]

    @property
    def before(self) -> dict[str, Any] | None:
        """Class-conditional summary of the base (UA, RA, FD, ...), if there is a base."""
        return self.metrics.get("classes", {}).get("base")

    @property
    def after(self) -> dict[str, Any] | None:
        return self.metrics.get("classes", {}).get("model")

    def summary(self) -> str:
        return format_summary(self.report)


@dataclass
class Process:
    """Which share of the generation this process does, and where."""

    rank: int = 0
    world: int = 1
    device: Any = "cpu"
    main: bool = True

    @classmethod
    def current(cls) -> Process:
        state = PartialState(cpu=not torch.cuda.is_available())
        return cls(state.process_index, state.num_processes, state.device, state.is_main_process)

    def barrier(self) -> None:
        if self.world > 1:
            PartialState().wait_for_everyone()


class AttackHook(Protocol):
    """How the evaluator runs a suite's `attacks` without importing the attack package (which sits above it)."""

    def check(self, pipes: dict, suite: EvalSuite) -> None:
        """Refuse attacks that cannot run on these pipes, before anything is written."""

    def __call__(self, pipes: dict, suite: EvalSuite, folder: Path, process: Process,
                 identity: dict) -> list[dict] | None:
        """Run them into `folder/attacks` (every process takes part); the report rows on the main process."""


def detector_tools(suite: EvalSuite) -> dict:
    tools = {}
    if "nudenet" in suite.metrics:
        tools["nudenet"] = NudeNet()
    if "clip" in suite.metrics:
        tools["clip"] = ClipScorer(suite.clip_model, suite.clip_pretrained, allow_pickle=suite.allow_pickle)
    if "classifier" in suite.metrics:
        tools["classifier"] = Judge(suite)
    return tools


def detector_versions(suite: EvalSuite) -> dict:
    out = {}
    if "nudenet" in suite.metrics:
        out["nudenet"] = {"version": md.version("nudenet"), "model": "320n.onnx (bundled in the wheel)",
                          "threshold": suite.nudenet_threshold, "nudity_labels": NUDITY_LABELS,
                          "counted_labels": EXPOSED_LABELS}
    if "clip" in suite.metrics:
        out["clip"] = {"open_clip": md.version("open_clip_torch"), "model": suite.clip_model,
                       "pretrained": suite.clip_pretrained}
    if "classifier" in suite.metrics:
        out["classifier"] = {"name": suite.classifier, "weights": suite.classifier_weights}
    return out


def measure_run(folder: Path, sides: list[str], suite: EvalSuite, records, adapter) -> tuple[dict, dict]:
    """Per-image results of each side, and metrics per group and side (plus class metrics)."""
    tools = detector_tools(suite)
    order = {r.path: i for i, r in enumerate(records)}
    results, metrics, images = {}, {}, {}
    for side in sides:
        done = sorted((r for r in read_manifest(folder / side) if r["path"] in order), key=lambda r: order[r["path"]])
        if len(done) != len(order):
            raise RuntimeError(f"{len(order) - len(done)} images of '{side}' are missing after generation")
        images[side] = load_images(folder / side, done)
        results[side] = measure_images(suite, images[side], done, tools, desc=f"evaluate: score {side}")
    for group in GROUPS:
        rows = {side: [r for r in results[side] if r["group"] == group] for side in sides}
        if rows["model"]:
            metrics[group] = {side: group_metrics(rows[side], suite) for side in sides}
    # Every side lists the same paths in record order, so positions pair base and erased images.
    retain = [i for i, r in enumerate(results["model"]) if r["group"] == "retain"]
    if retain and "base" in sides:
        base_imgs, model_imgs = ([images[side][i] for i in retain] for side in ("base", "model"))
        metrics["collateral"] = collateral_metrics(base_imgs, model_imgs, tools)
    if adapter.family == "class-conditional" and "classifier" in tools:
        metrics["classes"] = class_metrics_by_side(images, results, suite, adapter, tools["classifier"])
    return results, metrics


def class_metrics_by_side(images: dict, results: dict, suite: EvalSuite, adapter, judge) -> dict:
    real = real_reference(judge, suite.forget)
    out = {}
    for side, side_images in images.items():
        stacked = torch.stack(side_images)
        labels = torch.tensor([r["class_id"] for r in results[side]])
        preds, feats = judge.predict(side_images)
        out[side] = class_metrics(stacked, labels, torch.tensor(preds), feats, suite.forget, adapter.num_classes, real)
    return out


def plan(pipes: dict, suite: EvalSuite):
    """The suite with the family's defaults, and its records; refuses a baseline of another family."""
    adapter = adapter_for(pipes["model"])
    if "base" in pipes and adapter_for(pipes["base"]).family != adapter.family:
        raise ConfigError(f"the model is {adapter.family} ({type(pipes['model']).__name__}) but the baseline is "
                          f"{adapter_for(pipes['base']).family} ({type(pipes['base']).__name__}); compare a model "
                          f"with its own base")
    suite = suite.for_family(adapter)
    return suite, build_records(suite, adapter), adapter


def evaluate_pipes(pipes: dict, suite: EvalSuite, folder: Path, identity: dict, process: Process,
                   autocast_dtype=None, attacks: AttackHook | None = None) -> dict | None:
    """Generate the suite with each pipe into `folder`, and (on the main process) measure and write
    report.json, results.jsonl, report.md and grid.png there. `pipes` maps "model" (and "base") to pipelines.
    The suite's `attacks` run through `attacks` (every process takes part); its rows become the report's
    `attacks` section."""

    suite, records, adapter = plan(pipes, suite)
    sides = [s for s in ("base", "model") if s in pipes]
    for side in sides:
        pipe = pipes[side]
        pipe.set_progress_bar_config(disable=True)
        place(pipe, process.device)
        generate_to_folder(pipe, records, folder / "images" / side, suite.eval_batch_size, suite.resolution,
                           suite.resolution, process.rank, process.world, autocast_dtype, desc=f"evaluate: generate {side}")
        place(pipe, "cpu")
    process.barrier()
    attack_rows = attacks(pipes, suite, folder, process, identity) if suite.attacks else None
    if not process.main:
        return None
    results, metrics = measure_run(folder / "images", sides, suite, records, adapter)
    report = {"schema": EVAL_SCHEMA, "erasekit_version": __version__, "settings": {
        **identity, "family": adapter.family, "suite": portable(asdict(suite)),
        "detectors": portable(detector_versions(suite)),
        "safety_checker": safety_checker_record(pipes.get("base", pipes["model"])),
        "seeds": sorted({r.seed for r in records}) if adapter.family != "class-conditional"
        else {"first": suite.eval_seed, "scheme": "eval_seed + class * samples_per_class + i"},
        "images_per_model": len(records), "processes": process.world}, "metrics": metrics}
    if metrics.get("classes"):
        report["settings"]["real_data"] = REAL_DATA
    if attack_rows is not None:
        report["attacks"] = attack_rows
    write_json(folder / "report.json", report)
    with open(folder / "results.jsonl", "w") as f:
        for side in sides:
            for row in results[side]:
                f.write(json.dumps({"side": side, **row}) + "\n")
    write_report(folder, report, records, suite, sides)
    return report


def _open_staging(output_dir: Path, suite: EvalSuite, identity: dict, overwrite: bool, main: bool) -> Path:
    check_output_free(output_dir, overwrite, "output")
    staging = staging_dir(output_dir)
    settings = {"suite": asdict(suite), **identity}
    marker = staging / "eval-settings.json"
    if marker.is_file():
        if json.loads(marker.read_text()) != json.loads(json.dumps(settings, default=str)):
            raise ConfigError(f"an interrupted eval with other settings is in {staging}; delete it or "
                              f"rerun the same command to continue it")
        if main:
            logger.info(f"continuing the interrupted eval in {staging}")
    elif main:
        staging.mkdir(parents=True, exist_ok=True)
        write_json(marker, settings)
    return staging


def run_eval(model, baseline, suite: EvalSuite, output_dir: str | os.PathLike | None,
             overwrite: bool = False, variant: str | None = None, attacks: AttackHook | None = None) -> EvalReport:
    """Generate the suite with `model` (and `baseline`, on identical records), measure, write the report.

    Without `output_dir` the images go to a temporary directory that is removed afterwards. Under
    `accelerate launch`, only the main process returns a report (the others return an empty one).
    A suite that lists `attacks` needs `attacks`, the hook that runs them (`erasekit.evaluate` and
    `erasekit eval` pass the attack package's).
    """
    if suite.attacks and attacks is None:
        raise ConfigError("this suite lists 'attacks'; run it with erasekit.evaluate or `erasekit eval`, which "
                          "run attacks")

    process = Process.current()
    dtype = DTYPES[suite.dtype] if suite.dtype else None
    options = dict(torch_dtype=dtype, allow_pickle=suite.allow_pickle, variant=variant)
    pipes = {"model": load_any_pipeline(model, **options)}
    if baseline is not None:
        pipes["base"] = load_any_pipeline(baseline, **options)
    identity = {"model": portable(str(model)), "baseline": portable(str(baseline)) if baseline is not None else None,
                "fingerprints": {n: fingerprint_state_dict(adapter_for(p).denoiser.state_dict())
                                 for n, p in pipes.items()}}
    planned = plan(pipes, suite)[0]  # bad settings fail here, before anything is written
    if suite.attacks:
        attacks.check(pipes, planned)
    if output_dir is None:
        folder = Path(tempfile.mkdtemp(prefix="erasekit-eval-"))
        try:
            report = evaluate_pipes(pipes, suite, folder, identity, Process(device=process.device), attacks=attacks)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return EvalReport(report, None)
    output_dir = Path(output_dir)
    staging = _open_staging(output_dir, suite, identity, overwrite, process.main)
    process.barrier()
    report = evaluate_pipes(pipes, suite, staging, identity, process, attacks=attacks)
    if report is None:
        return EvalReport({}, None)
    commit_dir(staging, output_dir, overwrite)
    return EvalReport(report, output_dir)


def evaluate(model, baseline=None, suite: EvalSuite | str | os.PathLike | None = None,
             output_dir: str | os.PathLike | None = None, overwrite: bool = False, variant: str | None = None,
             attacks: AttackHook | None = None, **settings) -> EvalReport:
    """Evaluate a model, optionally against its base under the same records and seeds.

    Args:
        model: a pipeline directory, a Hub id or `bundled:NAME`.
        baseline: the model before erasure.
        suite: an `EvalSuite`, a suite YAML path, or None for the defaults.
        output_dir: where to write report.json, report.md, results.jsonl, grid.png and the images.
        variant: weights variant of both models, e.g. "fp16".
        settings: suite keys that replace the suite's values, e.g. `forget=[3]`, `samples_per_class=10`.
    """
    if isinstance(suite, (str, os.PathLike)):
        suite = load_suite(suite, settings)
    else:
        known = {f.name for f in fields(EvalSuite)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"unknown eval setting '{unknown[0]}'; valid settings: {', '.join(sorted(known))}")
        suite = EvalSuite(**{**(asdict(suite) if suite else {}), **settings})
    return run_eval(model, baseline, suite, output_dir, overwrite, variant, attacks)
