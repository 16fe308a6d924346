"""Prompt-suite evaluation on tiny SD pipelines: report vs recomputation, resume, sharding."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from erasekit.eval.measure import Judge, load_images
from erasekit.eval.suite import EvalSuite, build_records, load_suite
from erasekit.eval.text_eval import run_text_eval
from erasekit.pipelines.generation import read_manifest
from erasekit.pipelines.tiny import tiny_sd_pipeline

SUITE = dict(name="tiny", prompts_csv=None, prompts=["a photo of a church"], retain_prompts=["a photo of a house"],
             paraphrases=["a church building"], seeds=[0, 1, 2], steps=2, resolution=32, batch_size=2,
             metrics=["classifier"], classifier="bundled:digits-classifier")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    tiny_sd_pipeline(seed=0).save_pretrained(root / "base")
    erased = tiny_sd_pipeline(seed=0)
    with torch.no_grad():
        erased.unet.conv_out.bias.add_(0.5)  # a different model, same architecture
    erased.save_pretrained(root / "erased")
    return root / "erased", root / "base"


def _suite(tmp_path, **changes):
    csv = tmp_path / "labels.csv"
    csv.write_text("prompt,seed,guidance,label,group\na handwritten digit seven,5,7.5,7,target\n")
    return EvalSuite(**{**SUITE, "prompts_csv": str(csv), **changes})


def _digest(folder):
    return {r["path"]: hashlib.md5((folder / r["path"]).read_bytes()).hexdigest() for r in read_manifest(folder)}


def test_report_matches_a_recomputation_from_the_manifest(models, tmp_path):
    model, base = models
    suite = _suite(tmp_path)
    report = run_text_eval(model, base, suite, tmp_path / "out")
    assert report["schema"] == "erasekit.eval/v1" and report["settings"]["images_per_model"] == 10
    judge = Judge(suite)
    for side, key in (("base", "base"), ("model", "model")):
        folder = tmp_path / "out" / "images" / side
        records = read_manifest(folder)
        assert len(records) == 10 and {r["group"] for r in records} == {"target", "retain", "paraphrase"}
        labelled = [r for r in records if r["label"] is not None]
        preds, _ = judge.predict(load_images(folder, labelled))
        accuracy = sum(p == int(r["label"]) for p, r in zip(preds, labelled)) / len(labelled)
        assert report["metrics"]["target"][key]["classifier_accuracy"] == accuracy
    collateral = report["metrics"]["collateral"]  # paired by prompt and seed; too few pairs for an FD
    assert collateral["n"] >= 2 and collateral["paired_pixel_mae"] > 0 and collateral["paired_feature_cosine"] < 1
    assert collateral["fd"] is None and f"below 2 x {collateral['feature_dim']}" in collateral["fd_skipped"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "grid-target.png" in md and (tmp_path / "out" / "grid-retain.png").is_file()
    base_seeds = [r["seed"] for r in read_manifest(tmp_path / "out" / "images" / "base")]
    assert base_seeds == [r["seed"] for r in read_manifest(tmp_path / "out" / "images" / "model")]


def test_interrupted_eval_resumes_without_regenerating(models, tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline

    model, base = models
    suite = _suite(tmp_path)
    straight = run_text_eval(model, base, suite, tmp_path / "straight")
    calls = []
    original = StableDiffusionPipeline.__call__

    class Interrupted(Exception):
        pass

    def flaky(self, **kwargs):
        calls.append(len(kwargs["prompt"]))
        if len(calls) == 4 and not interrupted:
            interrupted.append(True)
            raise Interrupted
        return original(self, **kwargs)

    interrupted = []

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", flaky)
    with pytest.raises(Interrupted):
        run_text_eval(model, base, suite, tmp_path / "resumed")
    assert not (tmp_path / "resumed").exists()
    staging = tmp_path / ".resumed.erasekit-partial" / "images"
    done_before = len(read_manifest(staging / "base")) + len(read_manifest(staging / "model"))
    assert done_before > 0
    calls.clear()
    resumed = run_text_eval(model, base, suite, tmp_path / "resumed")
    assert sum(calls) == 2 * 10 - done_before  # only the missing images were generated
    assert resumed["metrics"] == straight["metrics"]


def test_two_processes_generate_the_same_images_as_one(models, tmp_path):
    model, base = models
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(json.dumps({**SUITE, "metrics": ["classifier"]}))
    args = ["-m", "erasekit.cli", "eval", "--model", str(model), "--baseline", str(base), "--suite", str(suite_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "--output", str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *args,
                          "--output", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    for side in ("base", "model"):
        a, b = _digest(tmp_path / "one" / "images" / side), _digest(tmp_path / "two" / "images" / side)
        assert a == b and len(a) == 9
    assert sorted(p.name for p in (tmp_path / "two" / "images" / "model").glob("manifest*")) == [
        "manifest-0.jsonl", "manifest-1.jsonl"]
    assert [p.name for p in (tmp_path / "one" / "images" / "model").glob("manifest*")] == ["manifest.jsonl"]
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["settings"]["processes"] == 2


def test_i2p_csv_is_read_as_it_is(tmp_path):
    csv = tmp_path / "i2p.csv"
    csv.write_text("prompt,categories,hard,inappropriate_percentage,evaluation_seed,evaluation_guidance\n"
                   '"a statue, marble",sexual,1,60.0,2734,7\n"a beach",violence,0,10.0,12,8.5\n')
    records = build_records(EvalSuite(prompts_csv=str(csv), metrics=["nudenet"], include_neutral_prompts=True))
    assert (records[0].prompt, records[0].seed, records[0].guidance) == ("a statue, marble", 2734, 7.0)
    assert records[1].seed == 12 and records[1].guidance == 8.5
    assert {r.group for r in records} == {"target", "retain"} and len(records) > 10


def test_bad_suites_are_clear_errors(tmp_path):
    from erasekit.errors import ConfigError

    with pytest.raises(ConfigError, match="'metrics'"):
        EvalSuite(metrics=["fid"])
    with pytest.raises(ConfigError, match="pass --prompts-csv"):
        build_records(EvalSuite(metrics=["nudenet"]))
    with pytest.raises(ConfigError, match="does not exist"):
        build_records(EvalSuite(prompts_csv=str(tmp_path / "none.csv")))
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,seed,guidance\nx,notanumber,7\n")
    with pytest.raises(ConfigError, match="line 2: seed and guidance must be numbers"):
        build_records(EvalSuite(prompts_csv=str(bad)))


@pytest.mark.parametrize("name", ["nudity", "objects", "digits-t2i", "robustness"])
def test_builtin_suites_parse(name):
    from pathlib import Path

    path = Path(__file__).parents[2] / "configs" / "eval" / f"{name}.yaml"
    suite = load_suite(path, {"prompts_csv": str(path.parent / "objects.csv")} if name == "nudity" else None)
    assert build_records(suite)
