"""One-shot erasure (erasekit.erase.oneshot): selection, the single perturbation, the factor check, the
diffusion classifier against a brute-force loop, SalUn's Fisher mask, config checks, and the shipped recipe."""

import json
from pathlib import Path

import pytest
import torch

import erasekit
from erasekit.erase.fisher import FisherSettings, fisher_scores
from erasekit.erase.methods import SalUnConfig, SalUnMethod, oneshot
from erasekit.erase.methods.oneshot import OneShotConfig, OneShotMethod, ddim_sample, diffusion_classify
from erasekit.erase.saliency import select_top_ratio
from erasekit.erase.tasks import ClassConditionalTask
from erasekit.errors import ConfigError

CONFIG = Path(__file__).parents[2] / "configs" / "digits-oneshot.yaml"


def prepared(pipe, task, **kwargs):
    method = OneShotMethod(OneShotConfig(fisher_samples=8, **kwargs))
    method.prepare(pipe.unet, task, torch.Generator().manual_seed(0))
    return method


def test_single_factor_scales_exactly_the_selected_weights(tiny_pipe, tiny_task):
    unet = tiny_pipe.unet
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    method = prepared(tiny_pipe, tiny_task, ratio=0.05, factors=[-0.5])
    total = sum(p.numel() for p in before.values())
    assert method.mask.selected == round(0.05 * total)
    assert method.mask.metadata == {"saliency": "fisher-ratio", "inputs": "data"}
    logs = method.edit(unet, tiny_task)
    assert logs == {"factor": -0.5, "perturbed_weights": method.mask.selected}
    for name, p in unet.named_parameters():
        m = method.mask.masks[name]
        assert torch.equal(p.detach()[~m], before[name][~m]), name
        assert torch.equal(p.detach()[m], before[name][m] * -0.5), name


def test_the_mask_is_the_top_ratio_of_the_fisher_ratio_and_is_deterministic(tiny_pipe, tiny_task):
    first = prepared(tiny_pipe, tiny_task, ratio=0.02)
    again = prepared(tiny_pipe, tiny_task, ratio=0.02)
    assert all(torch.equal(first.mask.masks[n], again.mask.masks[n]) for n in first.mask.masks)
    params = dict(tiny_pipe.unet.named_parameters())
    scores = fisher_scores(tiny_pipe.unet, tiny_task, params, FisherSettings(fisher_samples=8), "data", first.seed)
    expected = select_top_ratio(scores, 0.02)
    assert all(torch.equal(first.mask.masks[n], expected[n]) for n in expected)


def test_codes_need_no_images(tiny_pipe, tiny_task):
    """Data-free: the same mask from a task with no images at all as from one with images."""
    empty = ClassConditionalTask.for_pipeline(tiny_pipe, torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long), [1])
    method = prepared(tiny_pipe, empty, inputs="codes", ratio=0.02)
    assert method.needs_images is False and OneShotMethod(OneShotConfig()).needs_images is True
    with_images = prepared(tiny_pipe, tiny_task, inputs="codes", ratio=0.02)
    assert all(torch.equal(method.mask.masks[n], with_images.mask.masks[n]) for n in method.mask.masks)
    with pytest.raises(ConfigError, match="'inputs' is 'data' but the task has no forget images"):
        prepared(tiny_pipe, empty, inputs="data")


def test_diffusion_classify_matches_a_loop_over_samples_and_candidates(tiny_pipe, tiny_task):
    unet = tiny_pipe.unet
    x = tiny_task.retain_x[:3]
    labels = diffusion_classify(unet, tiny_task, x, [0, 2, 3], levels=2, seed=4)
    expected = []
    for i in range(3):
        losses = []
        for c in (0, 2, 3):
            total = 0.0
            for k, level in enumerate((0.25, 0.75)):
                # the batch's noise: sample i's share of a (3, ...) draw from seed 4 + k
                noise = torch.randn((3, *x.shape[1:]), generator=torch.Generator().manual_seed(4 + k))[i:i + 1]
                t = torch.tensor([int(level * 1000)])
                z = tiny_task.scheduler.add_noise(x[i:i + 1], noise, t)
                target = tiny_task.scheduler.get_velocity(x[i:i + 1], noise, t)
                with torch.no_grad():
                    out = unet(z, t, class_labels=torch.tensor([c])).sample
                total += float(((out - target) ** 2).mean())
            losses.append(total)
        expected.append((0, 2, 3)[min(range(3), key=losses.__getitem__)])
    assert labels.tolist() == expected


def test_ddim_sample_is_seeded_and_shaped(tiny_pipe, tiny_task):
    cond = torch.tensor([1, 1, 2])
    a = ddim_sample(tiny_pipe.unet, tiny_task, cond, steps=3, guidance=2.0, seed=9)
    b = ddim_sample(tiny_pipe.unet, tiny_task, cond, steps=3, guidance=2.0, seed=9)
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b) and torch.isfinite(a).all()
    assert not torch.equal(a, ddim_sample(tiny_pipe.unet, tiny_task, cond, steps=3, guidance=2.0, seed=10))


@pytest.mark.parametrize("recognised,chosen,tried", [
    ({0.0: 0.5, -1.0: 0.0}, -1.0, [0.0, -1.0]),  # zeroing leaves the concept: the sign flip is kept
    ({0.0: 0.0, -1.0: 0.0}, 0.0, [0.0]),  # the mildest that erases; stronger ones are not tried
    ({0.0: 0.5, -1.0: 0.25}, -1.0, [0.0, -1.0]),  # none erases: the lowest share
])
def test_factors_are_tried_mildest_first_until_the_base_model_no_longer_recognises_the_concept(
        tiny_pipe, tiny_task, monkeypatch, recognised, chosen, tried):
    unet = tiny_pipe.unet
    method = prepared(tiny_pipe, tiny_task, ratio=0.05, factors=[-1.0, 0.0], check_samples=4, check_steps=2,
                      check_levels=2)
    name = next(iter(method.mask.masks))
    seen = []

    def fake_classify(denoiser, task, samples, candidates, levels, seed):
        # the judge must be the base model: the selected weights are restored when it runs
        assert candidates == [0, 1, 2, 3] and len(samples) == 4
        factor = fake_classify.factor
        seen.append(factor)
        n = round(recognised[factor] * 4)
        return torch.tensor([1] * n + [0] * (4 - n))

    def fake_sample(denoiser, task, cond, steps, guidance, seed):
        m = method.mask.masks[name]
        value = dict(denoiser.named_parameters())[name].detach()[m]
        fake_classify.factor = float((value / base[m])[0])
        return torch.zeros(len(cond), 1, 8, 8)

    base = dict(unet.named_parameters())[name].detach().clone()
    assert method.mask.masks[name].any()
    monkeypatch.setattr(oneshot, "diffusion_classify", fake_classify)
    monkeypatch.setattr(oneshot, "ddim_sample", fake_sample)
    logs = method.edit(unet, tiny_task)
    assert seen == tried and logs["factor"] == chosen
    assert [t["factor"] for t in logs["trials"]] == tried
    m = method.mask.masks[name]
    assert torch.equal(dict(unet.named_parameters())[name].detach()[m], base[m] * chosen)


def test_salun_with_fisher_saliency_selects_by_the_fisher_ratio(tiny_pipe, tiny_task):
    cfg = SalUnConfig(saliency="fisher", ratio=0.1, fisher_samples=6, saliency_guidance=0.0)
    mask = SalUnMethod(cfg).compute_mask(tiny_pipe.unet, tiny_task, torch.Generator().manual_seed(3))
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(3)))
    params = dict(tiny_pipe.unet.named_parameters())
    expected = select_top_ratio(fisher_scores(tiny_pipe.unet, tiny_task, params, cfg, "data", seed), 0.1)
    assert mask.metadata["saliency"] == "fisher-ratio"
    assert all(torch.equal(mask.masks[n], expected[n]) for n in expected)


@pytest.mark.parametrize("field,value", [
    ("ratio", 0.0), ("ratio", 1.5), ("inputs", "images"), ("fisher_guidance", -1.0), ("fisher_null_weight", -0.5),
    ("factors", []), ("factors", [1.0]), ("factors", [float("nan")]), ("factors", "zero"), ("check_samples", 0),
    ("check_steps", 1.5), ("check_levels", True), ("check_guidance", 0.5), ("max_recognised", 1.0),
    ("fisher_samples", -3), ("fisher_delta", -1e-3),
])
def test_oneshot_config_rejects_bad_values(field, value):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        OneShotConfig(**{field: value})


def test_salun_config_rejects_an_unknown_saliency():
    with pytest.raises(ConfigError, match="'saliency'"):
        SalUnConfig(saliency="hessian")


def test_shipped_oneshot_recipe_erases_a_digit_from_the_cli(tmp_path, capsys):
    """configs/digits-oneshot.yaml with its own settings (10 samples per class instead of 50), data and
    data-free, through `erasekit erase`."""
    from erasekit.cli import main

    for inputs in ("data", "codes"):
        out = tmp_path / inputs
        assert main(["erase", "--config", str(CONFIG), "--forget", "3", "--inputs", inputs, "--output-dir", str(out),
                     "--samples-per-class", "10"]) == 0
        record = json.loads((out / "erasure.json").read_text())
        assert record["method"] == "oneshot" and record["config"]["method"]["inputs"] == inputs
        method, train = record["config"]["method"], record["metrics"]["train"]
        assert method["ratio"] == 0.01 and method["scope"] == "no-time"
        assert train["factor"] == train["trials"][-1]["factor"] in method["factors"]  # the check chose it
        assert train["recognised"] <= method["max_recognised"], train
        before, after = record["metrics"]["before"], record["metrics"]["after"]
        assert before["UA"] <= 0.1 and after["UA"] >= 0.9, (inputs, after)
        assert after["RA"] >= before["RA"] - 0.05 and after["FD"] <= 1.25 * before["FD"], (inputs, before, after)
        assert record["mask"]["selected"] == round(0.01 * record["mask"]["total"])
        erased = erasekit.load_pipeline(out).unet.state_dict()
        base = erasekit.load_pipeline("bundled:digits-cfg").unet.state_dict()
        changed = sum(int((erased[n] != base[n]).sum()) for n in base)
        assert 0 < changed <= record["mask"]["selected"]


def test_several_factors_refuse_a_flow_matching_model_before_any_work(tiny_task):
    class FlowMatchingScheduler:  # no alphas_cumprod, as diffusers' FlowMatchEulerDiscreteScheduler
        pass

    tiny_task.scheduler = FlowMatchingScheduler()
    with pytest.raises(ConfigError, match="'factors' lists several factors"):
        OneShotMethod(OneShotConfig(factors=[0.0, -1.0])).prepare(None, tiny_task, torch.Generator())
