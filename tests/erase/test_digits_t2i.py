"""Erasing "seven" by prompt from bundled:digits-t2i, measured by the digits judge on generated images.

Seeds: erasure seed 0 (configs/digits-t2i.yaml); judged images use seed 0 + 1000 d + 100 j + i for
image i of prompt template j of digit d, identical for the base and the erased model.
"""

import json
from pathlib import Path

import pytest

import erasekit
from erasekit.eval.digits_t2i import digits_t2i_metrics

CONFIG = Path(__file__).parents[2] / "configs" / "digits-t2i.yaml"
SUITE = Path(__file__).parents[2] / "configs" / "eval" / "digits-t2i.yaml"


@pytest.fixture(scope="module")
def erased_seven(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits-t2i")
    erasekit.erase(CONFIG, output_dir=str(root / "no-seven"), data_cache_dir=str(root / "cache"), seed=0)
    return root / "no-seven"


def test_seven_is_erased_by_prompt_and_paraphrase_and_other_digits_survive(erased_seven):
    base = digits_t2i_metrics(erasekit.load_pipeline("bundled:digits-t2i"), forget_digit=7)
    after = digits_t2i_metrics(erasekit.load_pipeline(erased_seven), forget_digit=7)
    assert base["UA_train_prompts"] <= 0.1 and base["UA_paraphrases"] <= 0.2  # the base draws sevens
    assert after["UA_train_prompts"] >= 0.9
    assert after["UA_paraphrases"] >= 0.9  # paraphrases never used in training or erasure
    assert after["other_digits_accuracy"] >= base["other_digits_accuracy"] - 0.05


def test_digits_t2i_eval_report_matches_recomputation(erased_seven, tmp_path):
    from erasekit.eval.measure import Judge, load_images
    from erasekit.eval.suite import load_suite
    from erasekit.eval.text_eval import run_text_eval
    from erasekit.pipelines.generation import read_manifest

    suite = load_suite(SUITE)
    report = run_text_eval(erased_seven, "bundled:digits-t2i", suite, tmp_path / "eval")
    judge = Judge(suite)
    for side in ("base", "model"):
        records = read_manifest(tmp_path / "eval" / "images" / side)
        preds, _ = judge.predict(load_images(tmp_path / "eval" / "images" / side, records))
        for group in ("target", "retain", "paraphrase"):
            rows = [(p, r) for p, r in zip(preds, records) if r["group"] == group]
            accuracy = sum(p == int(r["label"]) for p, r in rows) / len(rows)
            assert report["metrics"][group][side]["classifier_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert report["metrics"]["target"]["model"]["classifier_accuracy"] <= 0.1
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["metrics"] == json.loads(json.dumps(report["metrics"]))
