"""An erase that lists `attacks` runs them on the erased model and its base at its end: the ASR goes into
erasure.json and the model card's model-index; attacks that cannot run are refused before training."""

import json

import pytest

import erasekit
from erasekit.errors import ConfigError

SMALL = dict(max_steps=3, saliency_passes=1, samples_per_class=2, num_inference_steps=3)


def test_erase_with_attacks_records_asr_in_the_record_and_the_card(tmp_path):
    out = tmp_path / "out"
    erasekit.erase("configs/digits.yaml", forget=[3], output_dir=str(out), attacks=["random", "trajectory"],
                   attack_instances=1, **SMALL)
    rows = json.loads((out / "erasure.json").read_text())["metrics"]["attacks"]
    assert {(r["attack"], r["role"]) for r in rows} == {(a, role) for a in ("random", "trajectory")
                                                        for role in ("erased", "base")}
    assert all(r["asr"] >= r["pre_asr"] and r["n"] == 1 for r in rows)
    assert (out / "attacks" / "report.json").is_file()
    card = (out / "README.md").read_text()
    assert "asr_random" in card and "asr_trajectory" in card


def test_attacks_that_cannot_run_are_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="needs a text encoder"):
        erasekit.erase("configs/digits.yaml", forget=[3], output_dir=str(tmp_path / "out"), attacks=["uda"], **SMALL)
    with pytest.raises(ConfigError, match="registered attacks"):
        erasekit.erase("configs/digits.yaml", forget=[3], output_dir=str(tmp_path / "out"), attacks=["nope"], **SMALL)
    assert not list(tmp_path.iterdir())
