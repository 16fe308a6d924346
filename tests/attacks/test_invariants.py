"""What every attack report must satisfy: ASR counts pre-successes, seeds fix the adversarial tokens,
decoded prompts round-trip or are flagged, learned embeddings load as textual inversions, bad input
is one line, and a killed run continues from its rows."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from erasekit.attacks import AttackRun, CCEConfig, UDAConfig, attack
from erasekit.attacks.report import summarize
from erasekit.attacks.vocab import decode_prompt, word_ids
from erasekit.cli import main
from erasekit.io import staging_dir
from erasekit.pipelines.loading import load_pipeline
from erasekit.pipelines.tokenizer import build_clip_tokenizer

T2I = dict(model="bundled:digits-t2i", forget_prompts=["a handwritten digit seven"], instances=1, eval_images=1,
           select_images=1, images_per_instance=2, num_inference_steps=4)


def test_asr_counts_instances_already_successful_without_the_attack():
    rows = [{"pre_success": True, "post_success": False, "post_image_rate": 0.0, "wall_s": 1.0},
            {"pre_success": False, "post_success": True, "post_image_rate": 1.0, "wall_s": 1.0},
            {"pre_success": False, "post_success": False, "post_image_rate": 0.25, "wall_s": 1.0}]
    s = summarize(rows, "cce", "erased", "embedding", {})
    assert s["asr"] == pytest.approx(2 / 3) and s["pre_asr"] == pytest.approx(1 / 3) and s["asr"] >= s["pre_asr"]
    assert s["post_only_rate"] == pytest.approx(1 / 3) and s["image_rate"] == pytest.approx(1.25 / 3)
    assert s["ci95"][0] < s["asr"] < s["ci95"][1]


def test_decoded_prompts_round_trip_or_are_flagged():
    tokenizer = build_clip_tokenizer(16)
    words = word_ids(tokenizer)[1000:1003].tolist()
    assert decode_prompt(tokenizer, words, "a seven")["round_trip"]
    pieces = [i for t, i in tokenizer.get_vocab().items() if not t.endswith("</w>") and t.isalpha()][:3]
    flagged = decode_prompt(tokenizer, pieces, "a seven")
    assert flagged["round_trip"] is False and flagged["decoded"].endswith("a seven")


def test_the_same_seed_gives_the_same_adversarial_ids(tmp_path):
    ids = []
    for name in ("a", "b"):
        attack(AttackRun(**T2I, attack=["uda"], output=str(tmp_path / name)), {"uda": UDAConfig(steps=3, check_every=0)})
        ids.append(json.loads((tmp_path / name / "attack.jsonl").read_text().splitlines()[0])["adversarial_ids"])
    assert ids[0] == ids[1] and len(ids[0]) == 3


def test_cce_embeddings_load_as_a_textual_inversion_and_give_the_same_images(tmp_path):
    out = tmp_path / "att"
    attack(AttackRun(**T2I, attack=["cce"], output=str(out)), {"cce": CCEConfig(steps=3, tokens=2)})
    row = json.loads((out / "attack.jsonl").read_text().splitlines()[0])
    state = load_file(out / row["embedding"])
    (token, vectors), = state.items()
    assert vectors.shape == (2, 32)
    pipe = load_pipeline("bundled:digits-t2i", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    pipe.load_textual_inversion(str(out / row["embedding"]), token=token)
    ours = pipe(prompt=[token], num_inference_steps=4, guidance_scale=7.5, height=16, width=16, output_type="pt",
                generator=[torch.Generator().manual_seed(row["eval_seeds"][0])]).images
    from erasekit.attacks.slots import TextSlots
    from erasekit.attacks.victim import Victim
    victim = Victim(load_pipeline("bundled:digits-t2i", device="cpu"), "erased", "bundled:digits-t2i", steps=4)
    slots = TextSlots(victim.pipe, 2, avoid="{tokens}")
    slots.vectors = {"text_encoder": vectors}
    with slots.active():
        theirs = victim.pipe(prompt=[slots.text], num_inference_steps=4, guidance_scale=7.5, height=16, width=16,
                             output_type="pt", generator=[torch.Generator().manual_seed(row["eval_seeds"][0])]).images
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("args, words", [
    (["--model", "bundled:digits-cfg", "--forget", "3", "--attack", "nope"], "registered attacks"),
    (["--model", "bundled:digits-cfg", "--forget", "3", "--attack", "uda"], "needs a text encoder"),
    (["--model", "bundled:digits-t2i", "--forget-prompts", "a handwritten digit seven", "--attack", "uda",
      "--uda-k", "20"], "free tokens"),
    (["--model", "bundled:digits-cfg", "--forget", "3", "--attack", "cce", "--concept-images", "EMPTY"], "holds no images"),
    (["--model", "bundled:digits-cfg", "--forget", "3", "--attack", "cce", "--uda-k", "2"], "not run here"),
    (["--model", "bundled:digits-cfg", "--forget", "3", "--attack", "random", "--attack-base", "false",
      "--reference", "bundled:digits-t2i"], "of one family"),
    (["--model", "bundled:digits-t2i", "--forget-prompts", "a handwritten digit seven", "--attack", "random",
      "--judge", "clip"], "needs the suite's 'concept'"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, words, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    out = tmp_path / "att"
    assert main(["attack", *args, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err
    assert not out.exists() and not staging_dir(out).exists()


def test_a_killed_run_continues_from_its_rows(tmp_path):
    run = dict(T2I, attack=["random", "uda"], instances=2)
    configs = {"uda": UDAConfig(steps=2, check_every=0)}
    first = tmp_path / "first"
    attack(AttackRun(**run, output=str(first)), configs)
    rows = (first / "attack.jsonl").read_text().splitlines()
    again = tmp_path / "again"
    staging = staging_dir(again)
    staging.mkdir()
    for name in ("attack-settings.json", "pre.jsonl"):
        shutil.copy(first / name, staging / name)
    settings = json.loads((staging / "attack-settings.json").read_text())
    settings["run"]["output"] = str(again)
    (staging / "attack-settings.json").write_text(json.dumps(settings))
    (staging / "attack.jsonl").write_text("\n".join(rows[:3]) + "\n" + rows[3][:20])  # cut mid-line by a kill
    attack(AttackRun(**run, output=str(again)), configs)
    resumed = (again / "attack.jsonl").read_text().splitlines()
    assert resumed[:3] == rows[:3] and len(resumed) == 4
    assert json.loads(resumed[3])["adversarial_ids"] == json.loads(rows[3])["adversarial_ids"]


@pytest.mark.slow  # two processes under accelerate launch, about a minute on 2 cores
def test_two_processes_give_the_rows_of_one(tmp_path):
    from launch import run_python

    args = ["-m", "erasekit.cli", "attack", "--model", "bundled:digits-t2i", "--forget-prompts",
            "a handwritten digit seven", "--attack", "random", "--attack", "uda", "--uda-steps", "2", "--instances", "3",
            "--eval-images", "1", "--num-inference-steps", "4", "--attack-base", "false"]
    run_python([*args, "--output", str(tmp_path / "one")], tmp_path)
    run_python([*args, "--output", str(tmp_path / "two")], tmp_path, processes=2)
    assert sorted(p.name for p in (tmp_path / "two").glob("attack*.jsonl")) == ["attack-0.jsonl", "attack-1.jsonl"]

    def rows(folder):
        lines = [json.loads(x) for p in sorted(folder.glob("attack*.jsonl")) for x in p.read_text().splitlines()]
        return sorted((r["attack"], r["instance"], r["adversarial_ids"], r["post_success"]) for r in lines)

    assert rows(tmp_path / "one") == rows(tmp_path / "two") and len(rows(tmp_path / "one")) == 6
    strip = [{k: v for k, v in r.items() if k != "wall_s_per_instance"}
             for r in json.loads((tmp_path / "one" / "report.json").read_text())["attacks"]]
    assert strip == [{k: v for k, v in r.items() if k != "wall_s_per_instance"}
                     for r in json.loads((tmp_path / "two" / "report.json").read_text())["attacks"]]
