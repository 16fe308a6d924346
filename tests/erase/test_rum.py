"""RUM refinement: subsets unlearned in order low, medium, high with the retain set of each stage, the
union of the stage masks, per-subset metrics, and `erasekit erase --refine rum` end to end."""

import json

import pytest
import torch
from safetensors.torch import load_file

from erasekit.cli import main
from erasekit.erase.memorization import PROXIES, TRAINING_LOSSES, TrainingLosses, cfg_gain, partition
from erasekit.erase.registry import SINGLE
from erasekit.erase.rum import RefineConfig, refine, union_mask
from erasekit.erase.saliency import SaliencyMask
from erasekit.erase.trainer import TrainConfig
from erasekit.errors import ConfigError
from erasekit.recipe import resolve_configs


class Recorder:
    """A trained method that records the forget and retain sets it is given and moves the weights a little."""

    mask = None
    needs_teacher = False
    needs_images = True
    edit = None
    seen: list = []

    def prepare(self, denoiser, task, generator, shard=None, teacher=None):
        Recorder.seen.append((task.forget_x.clone(), task.retain_x.clone()))

    def trainable_parameters(self, denoiser, task):
        return dict(denoiser.named_parameters())

    def compute_loss(self, denoiser, sampler):
        batch = sampler.forget(4)
        noisy = sampler.noisy(batch.x0)
        loss = (sampler.task.predict(denoiser, noisy.z_t, noisy.t, batch.cond) - noisy.target).pow(2).mean()
        return loss, {"loss": loss.item()}


def _rows(x: torch.Tensor) -> set:
    return {tuple(r.flatten().tolist()) for r in x}


@pytest.mark.parametrize("retain, steps, proxy", [("progressive", None, "cfg_gain"), ("kept", None, "cfg_gain"),
                                                   ("progressive", [0, 2, 2], "cfg_gain"),
                                                   ("progressive", [1, 1, 1], "cond_magnitude"),
                                                   ("kept", [1, 1, 1], "loss"),
                                                   ("progressive", [1, 1, 1], "training_loss")])
def test_stages_unlearn_the_subsets_in_order_with_their_retain_sets(tiny_pipe, tiny_task, tmp_path, retain, steps,
                                                                     proxy):
    from erasekit.erase.trainer import make_accelerator

    run = RefineConfig(refine="rum", refine_retain=retain, refine_steps=steps, refine_proxy=proxy, refine_draws=2)
    train = TrainConfig(seed=0, max_steps=2, lr_scheduler="constant", log_every=1)
    forget_x, retain_x = tiny_task.forget_x.clone(), tiny_task.retain_x.clone()
    if proxy == "training_loss":  # a record of the base's running losses, beside its weights
        losses = torch.rand(tiny_task.data_count, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        recorder = TrainingLosses(tiny_task.data_count)
        recorder.add(torch.arange(tiny_task.data_count), losses)
        recorder.save(tmp_path / TRAINING_LOSSES, {})
        scores = losses[tiny_task.forget_index]
    else:
        scores = PROXIES[proxy](tiny_pipe.unet, tiny_task, forget_x, tiny_task.forget_c, train.seed, run.refine_draws)
    gains = cfg_gain(tiny_pipe.unet, tiny_task, forget_x, tiny_task.forget_c, train.seed, run.refine_draws)
    parts = partition(scores)
    Recorder.seen = []
    _, _, record = refine(tiny_pipe.unet, Recorder, tiny_task, run, train, str(tmp_path), tmp_path,
                          make_accelerator(train, tmp_path), SINGLE, None)
    order = [p for p, n in zip(("low", "medium", "high"), steps or [2, 2, 2]) if n]
    assert [s["subset"] for s in record["stages"]] == order and len(Recorder.seen) == len(order)
    done = []
    for name, (forget, retained) in zip(order, Recorder.seen):
        assert _rows(forget) == _rows(forget_x[parts[name]])  # stage k forgets subset k only
        done.append(parts[name])
        still = [i for i in range(len(forget_x)) if i not in torch.cat(done).tolist()]
        expected = retain_x if retain == "kept" else torch.cat([retain_x, forget_x[still]])
        assert len(retained) == len(expected) and _rows(retained) == _rows(expected)
    assert torch.equal(tiny_task.forget_x, forget_x) and torch.equal(tiny_task.retain_x, retain_x)  # restored
    for name, idx in parts.items():  # the base row holds the CFG gain of the proxy's subsets, subset by subset
        assert record["base"][name]["cfg_gain"] == pytest.approx(float(gains[idx].mean()))
    assert record["stages"][-1]["after"]["retain"]["count"] == len(retain_x)
    assert all((tmp_path / "rum" / name / "logs.jsonl").is_file() for name in order)


def test_union_mask_is_the_elementwise_or_of_the_stage_masks():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.rand(5, 3, generator=g) < 0.3, "b": torch.rand(4, generator=g) < 0.5}
    b = {"w": torch.rand(5, 3, generator=g) < 0.3, "b": torch.rand(4, generator=g) < 0.5}
    merged = union_mask([SaliencyMask(a, 0.3, "all"), SaliencyMask(b, 0.5, "all")])
    for name in a:
        for i in range(a[name].numel()):
            assert bool(merged.masks[name].flatten()[i]) == bool(a[name].flatten()[i] or b[name].flatten()[i])
    assert union_mask([]) is None


def test_erase_with_rum_refinement_end_to_end(tmp_path):
    out = tmp_path / "rum"
    assert main(["erase", "--config", "configs/digits.yaml", "--forget", "8", "--refine", "rum", "--refine-steps",
                 "[2, 2, 2]", "--refine-draws", "2", "--saliency-passes", "1", "--evaluate", "false",
                 "--output-dir", str(out)]) == 0
    record = json.loads((out / "erasure.json").read_text())
    refined = record["metrics"]["refine"]
    assert [s["subset"] for s in refined["stages"]] == ["low", "medium", "high"]
    assert sum(p["count"] for p in refined["parts"].values()) == 139  # every 8 of the training digits
    assert set(refined["stages"][0]["after"]) == {"low", "medium", "high", "retain"}
    assert record["config"]["refine"]["refine"] == "rum" and record["config"]["refine"]["refine_steps"] == [2, 2, 2]
    mask = load_file(out / "mask.safetensors")  # the union over stages covers every changed weight
    unet = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    from erasekit.pipelines.loading import load_pipeline

    base = load_pipeline("bundled:digits-cfg").unet.state_dict()
    changed = sum(int((unet[k] != base[k]).sum()) for k in unet)
    outside = sum(int(((unet[k] != base[k]) & ~mask[k]).sum()) for k in mask)
    assert changed > 0 and outside == 0
    assert record["mask"]["selected"] == sum(int(m.sum()) for m in mask.values())


@pytest.mark.parametrize("bad, field", [
    ({"refine": "rum2"}, "refine"), ({"refine": "rum", "refine_proxy": "memorized"}, "refine_proxy"),
    ({"refine": "rum", "refine_draws": 0}, "refine_draws"), ({"refine": "rum", "refine_steps": [1, 2]}, "refine_steps"),
    ({"refine": "rum", "refine_steps": [0, 0, 0]}, "refine_steps"),
    ({"refine": "rum", "refine_steps": [1, -1, 1]}, "refine_steps"),
    ({"refine": "rum", "refine_retain": "all"}, "refine_retain"),
    ({"refine": "rum", "checkpointing_steps": 5}, "checkpointing_steps"),
    ({"refine": "rum", "refine_proxy": "holdout", "data": "generated"}, "data"),
    ({"refine": "rum", "refine_proxy": "training_loss", "data": "generated"}, "data"),
])
def test_bad_refine_settings_name_the_field(bad, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        resolve_configs(None, {"output_dir": "out", **bad})


def test_refine_refuses_a_training_free_method(tmp_path, capsys):
    assert main(["erase", "--config", "configs/digits-oneshot.yaml", "--forget", "8", "--refine", "rum",
                 "--evaluate", "false", "--output-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "'refine: rum'" in err and "Traceback" not in err and not (tmp_path / "x").exists()
