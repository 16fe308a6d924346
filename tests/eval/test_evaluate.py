"""The one evaluator, on tiny SD pipelines and the bundled class-conditional digits model: report vs
recomputation, resume and sharding for both families, one report schema."""

import hashlib
import json

import pytest
import torch

from erasekit.eval.evaluate import EVAL_SCHEMA, run_eval
from erasekit.eval.measure import Judge, load_images
from erasekit.eval.suite import EvalSuite, build_records, load_suite
from erasekit.pipelines.generation import read_manifest
from launch import run_python
from tiny import tiny_sd_pipeline

SUITE = dict(name="tiny", prompts_csv=None, prompts=["a photo of a church"], retain_prompts=["a photo of a house"],
             paraphrases=["a church building"], seeds=[0, 1, 2], num_inference_steps=2, resolution=32, eval_batch_size=2,
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


@pytest.fixture(scope="module")
def class_models(tmp_path_factory):
    """The bundled digits model and a copy with one bias moved: base and "erased" of the class family."""
    import erasekit

    root = tmp_path_factory.mktemp("class-models")
    pipe = erasekit.load_pipeline("bundled:digits-cfg")
    with torch.no_grad():
        pipe.unet.conv_out.bias.add_(0.05)
    pipe.save_pretrained(root / "erased")
    return root / "erased", "bundled:digits-cfg"


CLASS_SUITE = dict(name="tiny-digits", forget=[3], samples_per_class=2, num_inference_steps=3, eval_batch_size=6)


def _suite(tmp_path, **changes):
    csv = tmp_path / "labels.csv"
    csv.write_text("prompt,seed,guidance,label,group\na handwritten digit seven,5,7.5,7,target\n")
    return EvalSuite(**{**SUITE, "prompts_csv": str(csv), **changes})


def _digest(folder):
    return {r["path"]: hashlib.md5((folder / r["path"]).read_bytes()).hexdigest() for r in read_manifest(folder)}


def test_report_matches_a_recomputation_from_the_manifest(models, tmp_path):
    model, base = models
    suite = _suite(tmp_path)
    report = run_eval(model, base, suite, tmp_path / "out").report
    assert report["schema"] == EVAL_SCHEMA and report["settings"]["images_per_model"] == 10
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
    assert "](grid.png)" in md and (tmp_path / "out" / "grid.png").is_file()
    base_seeds = [r["seed"] for r in read_manifest(tmp_path / "out" / "images" / "base")]
    assert base_seeds == [r["seed"] for r in read_manifest(tmp_path / "out" / "images" / "model")]


@pytest.mark.parametrize("family", ["text-to-image", "class-conditional"])
def test_interrupted_eval_resumes_without_regenerating(models, class_models, tmp_path, monkeypatch, family):
    import erasekit.pipelines.generation as generation

    if family == "text-to-image":
        (model, base), suite, total = models, _suite(tmp_path), 10
    else:
        (model, base), suite, total = class_models, EvalSuite(**CLASS_SUITE), 20
    straight = run_eval(model, base, suite, tmp_path / "straight").report
    saved, original = [], generation.save_image

    class Interrupted(Exception):
        pass

    def flaky(image, path):
        saved.append(path)
        if len(saved) == 7 and not interrupted:
            interrupted.append(True)
            raise Interrupted
        return original(image, path)

    interrupted = []
    monkeypatch.setattr(generation, "save_image", flaky)
    with pytest.raises(Interrupted):
        run_eval(model, base, suite, tmp_path / "resumed")
    assert not (tmp_path / "resumed").exists()
    staging = tmp_path / ".resumed.erasekit-partial" / "images"
    done_before = len(read_manifest(staging / "base")) + len(read_manifest(staging / "model"))
    assert done_before == 6
    saved.clear()
    resumed = run_eval(model, base, suite, tmp_path / "resumed").report
    assert len(saved) == 2 * total - done_before  # only the missing images were generated
    assert resumed["metrics"] == straight["metrics"] and resumed["schema"] == straight["schema"] == EVAL_SCHEMA
    for side in ("base", "model"):
        assert _digest(tmp_path / "straight" / "images" / side) == _digest(tmp_path / "resumed" / "images" / side)


@pytest.mark.parametrize("family", ["text-to-image", pytest.param("class-conditional", marks=pytest.mark.slow)])
def test_two_processes_generate_the_same_images_as_one(models, class_models, tmp_path, family):
    model, base = models if family == "text-to-image" else class_models
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(json.dumps({**SUITE, "metrics": ["classifier"]} if family == "text-to-image" else CLASS_SUITE))
    images = 9 if family == "text-to-image" else 20
    args = ["-m", "erasekit.cli", "eval", "--model", str(model), "--baseline", str(base), "--suite", str(suite_file)]
    run_python([*args, "--output", str(tmp_path / "one")], tmp_path)
    run_python([*args, "--output", str(tmp_path / "two")], tmp_path, processes=2)
    for side in ("base", "model"):
        a, b = _digest(tmp_path / "one" / "images" / side), _digest(tmp_path / "two" / "images" / side)
        assert a == b and len(a) == images
    assert sorted(p.name for p in (tmp_path / "two" / "images" / "model").glob("manifest*")) == [
        "manifest-0.jsonl", "manifest-1.jsonl"]
    assert [p.name for p in (tmp_path / "one" / "images" / "model").glob("manifest*")] == ["manifest.jsonl"]
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    one_report = json.loads((tmp_path / "one" / "report.json").read_text())
    assert report["settings"]["processes"] == 2 and report["metrics"] == one_report["metrics"]
    assert report["schema"] == EVAL_SCHEMA and report["settings"]["family"] == family


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


def test_class_conditional_report_matches_a_recomputation(class_models, tmp_path):
    """Class metrics from the stored float images equal a direct recomputation; one schema, both families."""
    from erasekit.eval.class_conditional import class_metrics, real_reference
    from erasekit.pipelines.generation import load_image

    model, base = class_models
    report = run_eval(model, base, EvalSuite(**CLASS_SUITE), tmp_path / "out").report
    assert report["schema"] == EVAL_SCHEMA and report["settings"]["family"] == "class-conditional"
    assert set(report["metrics"]) == {"target", "retain", "collateral", "classes"}
    assert report["metrics"]["target"]["model"]["images"] == 2 and report["metrics"]["retain"]["model"]["images"] == 18
    judge = Judge(EvalSuite(**CLASS_SUITE, metrics=["classifier"]))
    real = real_reference(judge, [3])
    for side in ("base", "model"):
        folder = tmp_path / "out" / "images" / side
        records = sorted(read_manifest(folder), key=lambda r: (r["class_id"], r["seed"]))
        images = torch.stack([load_image(folder / r["path"]) for r in records])
        assert images.dtype == torch.float32 and images.shape == (20, 1, 16, 16)
        preds, feats = judge.predict(list(images))
        labels = torch.tensor([r["class_id"] for r in records])
        expected = class_metrics(images, labels, torch.tensor(preds), feats, [3], 10, real)
        got = report["metrics"]["classes"][side]
        assert got["per_class_accuracy"] == expected["per_class_accuracy"] and got["UA"] == expected["UA"]
        assert got["FD"] == pytest.approx(expected["FD"], rel=1e-9)
        assert [r["seed"] for r in records] == [1234 + c * 2 + i for c in range(10) for i in range(2)]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| UA |" in md and "](grid.png)" in md and (tmp_path / "out" / "metrics.png").is_file()


def test_class_suite_refuses_prompts_and_text_suite_refuses_classes():
    from erasekit.errors import ConfigError
    from erasekit.pipelines.adapters import adapter_for
    from erasekit.pipelines.loading import load_pipeline

    adapter = adapter_for(load_pipeline("bundled:digits-cfg"))
    with pytest.raises(ConfigError, match="'prompts' gives prompts, but the model is class-conditional"):
        build_records(EvalSuite(prompts=["a cat"]), adapter)
    with pytest.raises(ConfigError, match="unknown class label 12"):
        build_records(EvalSuite(forget=[12]), adapter)
    with pytest.raises(ConfigError, match="'forget' names classes, but the model is text-to-image"):
        build_records(EvalSuite(forget=[1], prompts=["a cat"]))
    records = build_records(EvalSuite(forget=[1], samples_per_class=3), adapter)
    assert [r.group for r in records].count("target") == 3 and records[0].steps == 50 and records[0].guidance == 3.0


def test_eval_without_a_baseline_reports_the_model_alone(class_models, tmp_path):
    model, _ = class_models
    report = run_eval(model, None, EvalSuite(**CLASS_SUITE), None)
    assert report.report_dir is None and report.before is None and 0 <= report.after["RA"] <= 1
    assert set(report.metrics["retain"]) == {"model"} and "collateral" not in report.metrics


@pytest.mark.parametrize("line", ['{"path": "../../escape.png"}', '{"path": "/etc/passwd"}', '{"prompt": "x"}',
                                  "not json", '["a list"]'])
def test_a_manifest_line_outside_the_folder_or_malformed_is_a_clear_error(tmp_path, line):
    from erasekit.errors import ConfigError

    (tmp_path / "manifest.jsonl").write_text(line + "\n" + '{"path": "target/00000.png"}\n')
    with pytest.raises(ConfigError, match="manifest.jsonl: line 1"):
        read_manifest(tmp_path)
