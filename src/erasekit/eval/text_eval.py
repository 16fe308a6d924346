"""`erasekit eval --suite`: text-to-image models and their base on identical prompts and seeds.

Generation is sharded across processes (each takes every world-th planned batch and appends to its
own `manifest-<rank>.jsonl`) and resumable: an interrupted eval leaves its hidden staging directory,
and the same command continues it, skipping images already in the manifests.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..errors import ConfigError
from ..io import check_output_free, commit_dir, fingerprint_state_dict, portable, staging_dir, write_json
from ..pipelines.generation import generate_to_folder, read_manifest
from .measure import Judge, collateral_metrics, group_metrics, load_images, measure_images
from .suite import GROUPS, EvalSuite, build_records

logger = logging.getLogger(__name__)

EVAL_SCHEMA = "erasekit.eval/v1"
SIDES = ("base", "model")


def _process():
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


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


def generate_side(pipe, records, folder: Path, suite: EvalSuite, rank: int, world: int) -> None:
    pipe.set_progress_bar_config(disable=True)
    size = suite.resolution
    generate_to_folder(pipe, records, folder, suite.batch_size, size, size, rank=rank, world=world)


def detector_tools(suite: EvalSuite) -> dict:
    tools = {}
    if "nudenet" in suite.metrics:
        from .nudenet import NudeNet

        tools["nudenet"] = NudeNet()
    if "clip" in suite.metrics:
        from .clip import ClipScorer

        tools["clip"] = ClipScorer(suite.clip_model, suite.clip_pretrained)
    if "classifier" in suite.metrics:
        tools["classifier"] = Judge(suite)
    return tools


def detector_versions(suite: EvalSuite) -> dict:
    import importlib.metadata as md

    out = {}
    if "nudenet" in suite.metrics:
        from .nudenet import EXPOSED_LABELS, NUDITY_LABELS

        out["nudenet"] = {"version": md.version("nudenet"), "model": "320n.onnx (bundled in the wheel)",
                          "threshold": suite.nudenet_threshold, "nudity_labels": NUDITY_LABELS,
                          "counted_labels": EXPOSED_LABELS}
    if "clip" in suite.metrics:
        out["clip"] = {"open_clip": md.version("open_clip_torch"), "model": suite.clip_model,
                       "pretrained": suite.clip_pretrained}
    if "classifier" in suite.metrics:
        out["classifier"] = {"name": suite.classifier, "weights": suite.classifier_weights}
    return out


def measure_run(staging: Path, suite: EvalSuite, records) -> tuple[dict, dict]:
    """Per-image results of both sides, and metrics per group and side."""
    tools = detector_tools(suite)
    wanted = {r.path for r in records}
    results, metrics, images = {}, {}, {}
    for side in SIDES:
        folder = staging / "images" / side
        done = [r for r in read_manifest(folder) if r["path"] in wanted]
        if len(done) != len(wanted):
            raise RuntimeError(f"{len(wanted) - len(done)} images of '{side}' are missing after generation")
        images[side] = load_images(folder, done)
        results[side] = measure_images(suite, images[side], done, tools)
    for group in GROUPS:
        rows = {side: [r for r in results[side] if r["group"] == group] for side in SIDES}
        if rows["model"]:
            metrics[group] = {side: group_metrics(rows[side], suite) for side in SIDES}
    # Both sides list the same paths in the same (sorted) order, so positions pair base and erased images.
    retain = [i for i, r in enumerate(results["base"]) if r["group"] == "retain"]
    if retain:
        base_imgs, model_imgs = ([images[side][i] for i in retain] for side in SIDES)
        metrics["collateral"] = collateral_metrics(base_imgs, model_imgs, tools)
    return results, metrics


def run_text_eval(model, baseline, suite: EvalSuite, output_dir: str | os.PathLike, overwrite: bool = False) -> dict:
    """Generate the suite with `model` and `baseline`, measure both, write report.json/report.md/grids."""
    from ..pipelines.adapters import adapter_for
    from ..pipelines.inference import DTYPES, safety_checker_record
    from ..pipelines.loading import load_any_pipeline

    state = _process()
    dtype = DTYPES[suite.dtype] if suite.dtype else None
    pipes = {"model": load_any_pipeline(model, torch_dtype=dtype), "base": load_any_pipeline(baseline, torch_dtype=dtype)}
    for name, pipe in pipes.items():
        if adapter_for(pipe).family != "text-to-image":
            raise ConfigError(f"--{'baseline' if name == 'base' else 'model'} is a {type(pipe).__name__}; a prompt "
                              f"suite needs text-to-image models (use the class-conditional eval for it)")
    identity = {"model": portable(str(model)), "baseline": portable(str(baseline)),
                "fingerprints": {n: fingerprint_state_dict(adapter_for(p).denoiser.state_dict()) for n, p in pipes.items()}}
    records = build_records(suite)
    output_dir = Path(output_dir)
    staging = _open_staging(output_dir, suite, identity, overwrite, state.is_main_process)
    state.wait_for_everyone()
    for side in SIDES:
        pipes[side].to(state.device)
        generate_side(pipes[side], records, staging / "images" / side, suite, state.process_index,
                      state.num_processes)
        pipes[side].to("cpu")
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    results, metrics = measure_run(staging, suite, records)
    report = {"schema": EVAL_SCHEMA, "erasekit_version": __version__, "settings": {
        **identity, "suite": portable(asdict(suite)), "detectors": portable(detector_versions(suite)),
        "safety_checker": safety_checker_record(pipes["base"]),
        "seeds": sorted({r.seed for r in records}), "images_per_model": len(records),
        "processes": state.num_processes}, "metrics": metrics}
    write_json(staging / "report.json", report)
    with open(staging / "results.jsonl", "w") as f:
        for side in SIDES:
            for row in results[side]:
                f.write(json.dumps({"side": side, **row}) + "\n")
    from .text_report import write_text_report

    write_text_report(staging, report, records, suite)
    commit_dir(staging, output_dir, overwrite)
    return report
