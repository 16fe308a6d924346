"""Sample unlearning: the forget images picked, the task's remapping, the membership test's AUC against
a pairwise reference, and `erasekit erase --config configs/digits-samples.yaml` end to end."""

import json

import pytest
import torch
from safetensors.torch import load_file

from erasekit.cli import main
from erasekit.erase import membership
from erasekit.erase.membership import auc, pick_samples
from erasekit.erase.tasks import SampleTask
from erasekit.errors import ConfigError
from erasekit.recipe import resolve_configs


def test_auc_matches_the_pairwise_count_with_ties_as_half():
    g = torch.Generator().manual_seed(0)
    members = torch.randint(0, 6, (17,), generator=g).double()
    nonmembers = torch.randint(0, 6, (11,), generator=g).double()
    wins = sum(1.0 if m < n else 0.5 if m == n else 0.0 for m in members.tolist() for n in nonmembers.tolist())
    assert auc(members, nonmembers) == pytest.approx(wins / (17 * 11))
    assert auc(torch.zeros(3), torch.ones(4)) == 1.0 and auc(torch.ones(3), torch.ones(4)) == 0.5
    with pytest.raises(ValueError):
        auc(torch.zeros(0), torch.ones(2))


def test_pick_samples_depends_on_its_seed_only():
    a = pick_samples(1437, 0.1, 0)
    assert len(a) == 144 and len(set(a.tolist())) == 144 and torch.equal(a, a.sort().values)
    assert torch.equal(a, pick_samples(1437, 0.1, 0)) and not torch.equal(a, pick_samples(1437, 0.1, 1))
    assert len(pick_samples(10, 0.01, 0)) == 1 and len(pick_samples(10, 0.99, 0)) == 9  # never empty, never all


def test_sample_task_forgets_the_picked_images_and_remaps_to_other_classes(tiny_pipe):
    from erasekit.pipelines.adapters import adapter_for

    adapter = adapter_for(tiny_pipe)
    labels = torch.arange(40) % adapter.num_classes
    images = torch.randn(40, *adapter.sample_shape())
    index = pick_samples(40, 0.25, 3)
    task = SampleTask(adapter, adapter.training_scheduler(), images, labels, index)
    assert torch.equal(task.forget_x, images[index]) and torch.equal(task.forget_c, labels[index])
    rest = torch.ones(40, dtype=torch.bool)
    rest[index] = False
    assert torch.equal(task.retain_x, images[rest])
    cond = labels[index].repeat(50)
    remapped = task.anchor_cond(cond, torch.Generator().manual_seed(0))
    assert not (remapped == cond).any() and set(remapped.tolist()) == set(range(adapter.num_classes))


def test_sample_unlearning_end_to_end_reports_the_membership_test(tmp_path, monkeypatch):
    monkeypatch.setattr(membership, "MIA_DRAWS", 2)
    out = tmp_path / "samples"
    assert main(["erase", "--config", "configs/digits-samples.yaml", "--max-steps", "2", "--saliency-passes", "1",
                 "--output-dir", str(out)]) == 0
    record = json.loads((out / "erasure.json").read_text())
    assert record["concept"]["forget_samples"] == 0.1 and len(record["concept"]["forget_index"]) == 144
    assert record["config"]["data"]["forget"] == [] and record["config"]["data"]["forget_samples_seed"] == 0
    for side in ("before", "after"):
        m = record["metrics"][side]
        assert 0 <= m["mia_auc"] <= 1 and m["n_forget"] == 144 and m["n_test"] == 360 and m["draws"] == 2
    assert record["metrics"]["before"]["mia_auc"] != record["metrics"]["after"]["mia_auc"]
    table = (out / "report" / "report.md").read_text()
    assert "| mia_auc |" in table and json.loads((out / "report" / "membership.json").read_text())["model"]
    mask = load_file(out / "mask.safetensors")
    unet = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    from erasekit.pipelines.loading import load_pipeline

    base = load_pipeline("bundled:digits-cfg").unet.state_dict()
    assert sum(int(((unet[k] != base[k]) & ~mask[k]).sum()) for k in mask) == 0
    assert "mia_auc" in (out / "README.md").read_text()


@pytest.mark.parametrize("values, field", [
    ({"forget_samples": 0.0}, "forget_samples"), ({"forget_samples": 1.5}, "forget_samples"),
    ({"forget_samples": True}, "forget_samples"), ({"forget_samples": 0.1, "forget_samples_seed": -1},
                                                   "forget_samples_seed"),
    ({"forget_samples": 0.1, "data": "generated"}, "data"), ({"forget_samples": 0.1, "forget": [3]}, "forget"),
    ({"forget_samples": 0.1, "remap": "farthest"}, "remap"),
])
def test_bad_sample_settings_name_the_field(values, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        resolve_configs({"output_dir": "out", **values}, {})


def test_sample_unlearning_refuses_a_training_free_method(tmp_path, capsys):
    assert main(["erase", "--config", "configs/digits-oneshot.yaml", "--forget", "[]", "--forget-samples", "0.1",
                 "--evaluate", "false", "--output-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "'forget_samples'" in err and "Traceback" not in err and not (tmp_path / "x").exists()
