"""Erasing "seven" by prompt from bundled:digits-t2i, judged by the digits CNN through the one evaluator.

Seeds: erasure seed 0 (configs/digits-t2i.yaml); judged images are the records of
configs/eval/digits-t2i.csv (prompt, seed, guidance, label, group), identical for the base and the erased model.
"""

import json
from pathlib import Path

import pytest

import erasekit

CONFIG = Path(__file__).parents[2] / "configs" / "digits-t2i.yaml"
SUITE = Path(__file__).parents[2] / "configs" / "eval" / "digits-t2i.yaml"


@pytest.fixture(scope="module")
def erased_seven(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits-t2i")
    erasekit.erase(CONFIG, output_dir=str(root / "no-seven"), data_cache_dir=str(root / "cache"), seed=0)
    return root / "no-seven"


def test_seven_is_erased_by_prompt_and_paraphrase_and_other_digits_survive(erased_seven, tmp_path):
    from erasekit.eval.evaluate import run_eval
    from erasekit.eval.measure import Judge, load_images
    from erasekit.eval.suite import load_suite
    from erasekit.pipelines.generation import read_manifest

    suite = load_suite(SUITE)
    report = run_eval(erased_seven, "bundled:digits-t2i", suite, tmp_path / "eval").report
    judge = Judge(suite)
    for side in ("base", "model"):
        records = read_manifest(tmp_path / "eval" / "images" / side)
        preds, _ = judge.predict(load_images(tmp_path / "eval" / "images" / side, records))
        for group in ("target", "retain", "paraphrase"):
            rows = [(p, r) for p, r in zip(preds, records) if r["group"] == group]
            accuracy = sum(p == int(r["label"]) for p, r in rows) / len(rows)
            assert report["metrics"][group][side]["classifier_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    accuracy = {g: {s: report["metrics"][g][s]["classifier_accuracy"] for s in ("base", "model")}
                for g in ("target", "retain", "paraphrase")}
    assert accuracy["target"]["base"] >= 0.9 and accuracy["paraphrase"]["base"] >= 0.8  # the base draws sevens
    assert accuracy["target"]["model"] <= 0.1
    assert accuracy["paraphrase"]["model"] <= 0.1  # paraphrases never used in training or erasure
    assert accuracy["retain"]["model"] >= accuracy["retain"]["base"] - 0.05
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(report["metrics"]))
