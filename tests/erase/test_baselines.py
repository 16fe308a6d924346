"""Baseline methods in the registry: ESD and GA losses against a brute-force recomputation, their
scopes, and an end-to-end erase through the one trainer."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from erasekit.erase.methods import ESDConfig, ESDMethod, GAConfig, GAMethod
from erasekit.erase.saliency import parameters_in_scope
from erasekit.erase.tasks import Sampler
from erasekit.errors import ConfigError


def test_esd_loss_is_the_negatively_guided_teacher_target(tiny_pipe, tiny_task):
    unet = tiny_pipe.unet
    teacher = copy.deepcopy(unet).requires_grad_(False)
    with torch.no_grad():  # a student that differs from its teacher
        unet.conv_out.bias.add_(0.3)
    method = ESDMethod(ESDConfig(negative_guidance=2.0, batch_size=6, scope="all"))
    method.prepare(unet, tiny_task, torch.Generator().manual_seed(0), teacher=teacher)
    loss, logs = method.compute_loss(unet, Sampler(tiny_task, torch.Generator().manual_seed(5), "cpu"))

    replay = Sampler(tiny_task, torch.Generator().manual_seed(5), "cpu")
    forget = replay.forget(6)
    noisy = replay.noisy(forget.x0)
    null = torch.full_like(forget.cond, tiny_task.null)
    with torch.no_grad():
        e_c = teacher(noisy.z_t, noisy.t, class_labels=forget.cond).sample
        e_0 = teacher(noisy.z_t, noisy.t, class_labels=null).sample
        student = unet(noisy.z_t, noisy.t, class_labels=forget.cond).sample
    expected = ((student - (e_0 - 2.0 * (e_c - e_0))) ** 2).mean()
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-7) and logs["forget_loss"] == pytest.approx(loss.item())
    assert (forget.cond == 1).all()  # only the forget class is drawn


def test_esd_with_a_retain_term_adds_alpha_times_the_diffusion_loss(tiny_pipe, tiny_task):
    unet = tiny_pipe.unet
    teacher = copy.deepcopy(unet).requires_grad_(False)
    method = ESDMethod(ESDConfig(batch_size=4, alpha=0.5, scope="all"))
    method.prepare(unet, tiny_task, torch.Generator(), teacher=teacher)
    loss, logs = method.compute_loss(unet, Sampler(tiny_task, torch.Generator().manual_seed(1), "cpu"))
    assert loss.item() == pytest.approx(logs["forget_loss"] + 0.5 * logs["retain_loss"], rel=1e-6)


def test_ga_ascends_the_forget_loss(tiny_pipe, tiny_task, tmp_path):
    unet = tiny_pipe.unet
    method = GAMethod(GAConfig(batch_size=6, alpha=0.25))
    loss, logs = method.compute_loss(unet, Sampler(tiny_task, torch.Generator().manual_seed(2), "cpu"))
    replay = Sampler(tiny_task, torch.Generator().manual_seed(2), "cpu")
    forget = replay.forget(6)
    noisy = replay.noisy(forget.x0)
    with torch.no_grad():
        forget_loss = F.mse_loss(unet(noisy.z_t, noisy.t, class_labels=forget.cond).sample, noisy.target)
    assert logs["forget_loss"] == pytest.approx(forget_loss.item(), rel=1e-6)
    assert loss.item() == pytest.approx(-logs["forget_loss"] + 0.25 * logs["retain_loss"], rel=1e-6)

    from erasekit.erase.trainer import EraseTrainer, TrainConfig

    def forget_loss_now():
        sampler = Sampler(tiny_task, torch.Generator().manual_seed(9), "cpu")
        with torch.no_grad():
            return GAMethod(GAConfig(batch_size=32, alpha=0.0)).compute_loss(unet, sampler)[1]["forget_loss"]

    before = forget_loss_now()
    EraseTrainer(unet, method, tiny_task, TrainConfig(seed=0, learning_rate=1e-2, max_steps=5), tmp_path).train()
    assert forget_loss_now() > before


def test_esd_u_and_esd_x_scopes_split_the_unet():
    from erasekit.pipelines.adapters import adapter_for
    from erasekit.pipelines.tiny import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(seed=0)
    scopes = adapter_for(pipe).scopes
    x = parameters_in_scope(pipe.unet, "xattn", scopes)
    u = parameters_in_scope(pipe.unet, "no-xattn", scopes)
    assert x and u and not set(x) & set(u) and set(x) | set(u) == {n for n, _ in pipe.unet.named_parameters()}
    assert all(".attn2." in n for n in x)


def test_bad_baseline_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="'negative_guidance'"):
        ESDConfig(negative_guidance=0)
    with pytest.raises(ConfigError, match="'alpha'"):
        GAConfig(alpha=-1)


@pytest.mark.parametrize("method", ["esd", "ga"])
def test_baselines_erase_end_to_end_with_the_record(method, tmp_path):
    import erasekit

    out = tmp_path / method
    extra = {"scope": "all"} if method == "esd" else {}
    erasekit.erase(method=method, forget=[2], output_dir=str(out), evaluate=False, max_steps=2, batch_size=8, **extra)
    record = json.loads((out / "erasure.json").read_text())
    assert record["method"] == method and record["mask"] is None
    assert record["metrics"]["train"]["step"] == 2
    base = erasekit.load_pipeline("bundled:digits-cfg").unet
    erased = erasekit.load_pipeline(str(out)).unet
    assert not torch.equal(base.conv_out.weight, erased.conv_out.weight)
