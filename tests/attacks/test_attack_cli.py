"""`erasekit attack` end to end from the CLI, on the bundled models and the published-shape replicas,
with small budgets (the default budgets are timed in benchmarks/robustness)."""

import json

import numpy as np
import pytest
from PIL import Image

from erasekit.attacks import ATTACKS
from erasekit.cli import main
from replicas import build_replica

TEXT_ATTACKS = ["uda", "p4d", "ringabell", "cce", "soft", "trajectory", "random", "seed_search", "transfer"]
CLASS_ATTACKS = ["cce", "soft", "trajectory", "random", "seed_search"]
SMALL = ["--instances", "2", "--eval-images", "1", "--select-images", "1", "--images-per-instance", "2",
         "--num-inference-steps", "4", "--uda-steps", "2", "--uda-check-every", "1", "--p4d-steps", "2",
         "--cce-steps", "2", "--soft-steps", "2", "--ringabell-generations", "2", "--ringabell-population", "4",
         "--trajectory-steps", "4", "--seed-search-budget", "2", "--transfer-prompts", "a drawing of a church"]


def small_flags(attacks):
    """SMALL without the flags of attacks not run (those are refused, by design)."""
    out, i = [], 0
    while i < len(SMALL):
        flag, value = SMALL[i], SMALL[i + 1]
        owner = next((a for a in ATTACKS if flag.startswith("--" + a.replace("_", "-") + "-")), None)
        if owner is None or owner in attacks:
            out += [flag, value]
        i += 2
    return out


def attack_args(attacks):
    return [x for a in attacks for x in ("--attack", a)] + small_flags(attacks)


def rows_of(out):
    return json.loads((out / "report.json").read_text())["attacks"]


def test_every_class_attack_runs_on_the_bundled_class_conditional_model(tmp_path):
    out = tmp_path / "att"
    assert main(["attack", "--model", "bundled:digits-cfg", "--baseline", "bundled:digits-cfg", "--reference",
                 "bundled:digits-cfg", "--forget", "3", "--output", str(out), *attack_args(CLASS_ATTACKS)]) == 0
    rows = rows_of(out)
    assert {(r["attack"], r["role"]) for r in rows} == {(a, role) for a in CLASS_ATTACKS
                                                        for role in ("erased", "base", "reference")}
    for row in rows:
        assert {"attack", "role", "threat_model", "asr", "pre_asr", "n", "ci95"} <= set(row)
        assert row["asr"] >= row["pre_asr"] and row["n"] == 2
        if row["role"] == "erased":  # the same model as reference here: no excess
            assert row["excess_asr"] == 0
    lines = [json.loads(line) for line in (out / "attack.jsonl").read_text().splitlines()]
    assert len(lines) == len(CLASS_ATTACKS) * 3 * 2
    assert (out / "grid.png").is_file() and (out / "report.md").read_text().startswith("# Attacks on")
    assert any(p.name.startswith("erased-cce-") for p in (out / "embeddings").iterdir())


def test_every_attack_runs_on_digits_t2i(tmp_path):
    out = tmp_path / "att"
    assert main(["attack", "--model", "bundled:digits-t2i", "--forget-prompts", "a handwritten digit seven",
                 "--output", str(out), *attack_args(TEXT_ATTACKS)]) == 0
    rows = rows_of(out)
    assert {r["attack"] for r in rows} == set(TEXT_ATTACKS) and {r["role"] for r in rows} == {"erased"}
    threat = {r["attack"]: r["threat_model"] for r in rows}
    assert threat["uda"] == "prompt" and threat["cce"] == "embedding" and threat["ringabell"] == "encoder-only"
    assert threat["transfer"] == "transfer" and threat["trajectory"] == "image"
    lines = [json.loads(line) for line in (out / "attack.jsonl").read_text().splitlines()]
    for line in lines:
        if line["attack"] in ("uda", "p4d", "ringabell", "random"):
            assert isinstance(line["round_trip"], bool) and line["decoded"] and line["adversarial_ids"]


@pytest.fixture(scope="module")
def concept_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("concept")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("kind", ["sdxl", "sd3", "flux"])
def test_every_attack_runs_on_the_published_shape_replicas(kind, tmp_path, concept_folder):
    model = build_replica(kind, tmp_path / kind)
    out = tmp_path / "att"
    assert main(["attack", "--model", str(model), "--forget-prompts", "a photo of a church", "--concept-images",
                 str(concept_folder), "--concept-label", "0", "--output", str(out),
                 *attack_args(TEXT_ATTACKS), "--instances", "1"]) == 0
    assert {r["attack"] for r in rows_of(out)} == set(TEXT_ATTACKS)


def test_digits_t2i_exclusions_name_the_reference():
    from erasekit.errors import ConfigError
    from erasekit.recipes.digits_t2i import DigitsT2IConfig, model_name, reproduce_command

    config = DigitsT2IConfig(exclude=["8", "Seven"], output_dir="refs")
    assert config.exclude == ["eight", "seven"] and model_name(config) == "digits-t2i-without-seven-eight"
    assert reproduce_command(config) == ("erasekit train-base digits-t2i --exclude eight --exclude seven "
                                         "--output-dir refs --overwrite")
    assert model_name(DigitsT2IConfig()) == "digits-t2i"
    with pytest.raises(ConfigError, match="'exclude'"):
        DigitsT2IConfig(exclude=[str(d) for d in range(10)])


@pytest.mark.slow  # about 30 s on 2 cores: two steps of each part and the selection's generation
def test_train_base_digits_t2i_without_seven_trains_on_no_seven(tmp_path, capsys):
    """The exact-unlearning reference of text-to-image erasure: one command, no image or caption of a seven."""
    from erasekit.pipelines.digits import load_digits_16

    assert main(["train-base", "digits-t2i", "--exclude", "seven", "--output-dir", str(tmp_path), "--vae-steps", "2",
                 "--max-steps", "2", "--select-every", "2", "--select-samples-per-class", "2"]) == 0
    record = json.loads((tmp_path / "digits-t2i-without-seven" / "training.json").read_text())
    data = load_digits_16()
    assert record["excluded_digits"] == ["seven"]
    assert record["training_images"] == int((data.train_labels != 7).sum()) < len(data.train_labels)
    assert record["command"] == (f"erasekit train-base digits-t2i --exclude seven --output-dir {tmp_path} "
                                 "--overwrite")
    assert main(["train-base", "digits-t2i", "--exclude", "eleven", "--output-dir", str(tmp_path)]) == 2
    assert "'exclude'" in capsys.readouterr().err
