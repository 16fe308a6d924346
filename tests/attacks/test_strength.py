"""The attacks are strong enough for their figures to mean something, at their default budgets:
on the base model cce and uda bring the concept back in >= 90% of instances by themselves (not counting
instances the plain label or prompt already wins), and cce undoes a deliberately weak erasure."""

import pytest
import torch

from erasekit.attacks import AttackRun, attack
from erasekit.pipelines.loading import load_pipeline

pytestmark = pytest.mark.slow


def erased_row(report, name):
    return next(r for r in report["attacks"] if r["attack"] == name and r["role"] == "erased")


def test_cce_brings_the_digit_back_on_the_base_model(tmp_path):
    report = attack(AttackRun(model="bundled:digits-cfg", attack_base=False, attack=["cce"], forget=[3, 8],
                              instances=10, output=str(tmp_path / "att")))
    assert erased_row(report, "cce")["post_only_rate"] >= 0.9


def test_uda_brings_the_digit_back_on_the_base_model(tmp_path):
    report = attack(AttackRun(model="bundled:digits-t2i", attack_base=False, attack=["uda"], instances=10,
                              forget_prompts=["a handwritten digit seven"], output=str(tmp_path / "att")))
    assert erased_row(report, "uda")["post_only_rate"] >= 0.9


def test_cce_undoes_a_weak_erasure_that_only_overwrites_the_label_row(tmp_path):
    pipe = load_pipeline("bundled:digits-cfg", device="cpu")
    table = pipe.unet.class_embedding.weight
    with torch.no_grad():
        table[3] = table[pipe.unet.config.num_class_embeds - 1]  # label 3 now draws what the null label draws
    pipe.save_pretrained(tmp_path / "weak")
    report = attack(AttackRun(model=str(tmp_path / "weak"), attack_base=False, attack=["cce"], forget=[3],
                              instances=10, output=str(tmp_path / "att")))
    row = erased_row(report, "cce")
    assert row["pre_asr"] <= 0.2, "the weak erasure should hide 3s from the plain label"
    assert row["asr"] >= 0.9
