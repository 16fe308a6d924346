"""The null-branch target (`null_target`): the posterior read from a model's own predictions, the mixture
of the kept conditions, and an erase that trains the unconditional branch on forget samples."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import erasekit
from erasekit.adversarial import FOUND_FILE
from erasekit.erase.masks import load_mask
from erasekit.erase.methods import ESDConfig, ESDMethod, RLConfig, RLMethod, shared
from erasekit.erase.methods.shared import retain_data_target, teacher_mixture
from erasekit.erase.objectives import (
    data_denoiser,
    mixture_posterior,
    project_to_simplex,
    retain_mixture_target,
)
from erasekit.erase.tasks import Batch, ClassConditionalTask, Sampler
from erasekit.errors import ConfigError
from erasekit.pipelines.delta import apply_delta_to_pipeline

ROOT = Path(__file__).parents[2]


def test_the_posterior_of_an_exact_mixture_is_recovered():
    g = torch.Generator().manual_seed(0)
    conditional = torch.randn(10, 6, 1, 8, 8, generator=g)
    true = project_to_simplex(2 * torch.randn(6, 10, generator=g))
    unconditional = (true.T.reshape(10, 6, 1, 1, 1) * conditional).sum(0)
    pi = mixture_posterior(conditional, unconditional, iters=500)
    assert torch.allclose(pi, true.double(), atol=1e-5)
    assert torch.allclose(pi.sum(1), torch.ones(6, dtype=torch.float64)) and (pi >= 0).all()


def test_the_target_is_the_kept_conditions_mixture_renormalised():
    conditional = torch.randn(3, 2, 1, 2, 2, generator=torch.Generator().manual_seed(1))  # K=3, B=2
    true = torch.tensor([[0.5, 0.25, 0.25], [0.0, 0.0, 1.0]])
    unconditional = (true.T.reshape(3, 2, 1, 1, 1) * conditional).sum(0)
    keep = torch.tensor([False, True, True])
    target = retain_mixture_target(conditional, unconditional, keep)
    # sample 0: half the mass on the forget condition, the rest split evenly: the mean of conditions 1 and 2
    assert torch.allclose(target[0], (conditional[1, 0] + conditional[2, 0]) / 2, atol=1e-4)
    assert torch.allclose(target[1], conditional[2, 1], atol=1e-4)
    # all the posterior on the forget condition: the kept conditions in equal parts
    only_forget = retain_mixture_target(conditional, conditional[0], keep)
    assert torch.allclose(only_forget, (conditional[1] + conditional[2]) / 2, atol=1e-4)


@pytest.mark.parametrize("target", ["retain-mixture", "anchor", "base"])
def test_an_erase_trains_the_null_branch_when_asked(tmp_path, monkeypatch, target):
    sizes = []

    def counted(teacher, task, noisy):
        sizes.append(noisy.z_t.shape[0])
        return teacher_mixture(teacher, task, noisy)

    monkeypatch.setattr(shared, "teacher_mixture", counted)
    out = tmp_path / "out"
    erasekit.erase("configs/digits.yaml", forget=[3], output_dir=str(out), null_target=target, null_weight=0.5,
                   null_batch_size=5, max_steps=2, saliency_passes=1, evaluate=False, log_every=1,
                   null_guidance=1.0 if target == "base" else 0.0)  # base unguided is the student at step 0
    logs = [json.loads(x) for x in (out / "logs.jsonl").read_text().splitlines() if "null_loss" in x]
    assert len(logs) == 2 and all(r["null_loss"] > 0 for r in logs)
    assert sizes == ([5, 5] if target == "retain-mixture" else [])  # the teacher sees the sub-batch only
    record = json.loads((out / "erasure.json").read_text())
    assert f'"null_target": "{target}"' in json.dumps(record)


def _mask(tmp_path, name, **overrides) -> dict[str, torch.Tensor]:
    out = tmp_path / name
    erasekit.erase("configs/digits.yaml", forget=[3], output_dir=str(out), max_steps=1, saliency_passes=1,
                   evaluate=False, **overrides)
    return load_file(out / "mask.safetensors")


def test_the_saliency_counts_the_null_branch_only_when_it_is_trained(tmp_path):
    plain = _mask(tmp_path, "plain")
    conditional = _mask(tmp_path, "conditional", null_target="anchor", saliency_branches="conditional")
    both = _mask(tmp_path, "both", null_target="anchor")
    assert plain.keys() == both.keys()
    assert all(torch.equal(plain[k], conditional[k]) for k in plain)
    changed = sum(int((plain[k] != both[k]).sum()) for k in plain)
    total = sum(v.numel() for v in plain.values())
    assert 0 < changed < total
    # both masks keep the same share of the weights
    assert sum(int(v.sum()) for v in both.values()) == sum(int(v.sum()) for v in plain.values())


@pytest.mark.parametrize(("config", "field", "value"), [
    (erasekit.SalUnConfig, "null_target", "everything"), (erasekit.SalUnConfig, "null_gate", "always"),
    (erasekit.RLConfig, "null_max_level", 0.0), (erasekit.ESDConfig, "null_batch_size", 0),
    (erasekit.ESDConfig, "null_guidance", -1.0), (erasekit.SalUnConfig, "saliency_branches", "null"),
    (erasekit.RLConfig, "data_min_level", 1.0), (erasekit.SalUnConfig, "forget_target", "data")])
def test_a_bad_null_setting_names_the_field(config, field, value):
    with pytest.raises(ConfigError, match=field):
        config(**{field: value})


def _moved_off(unet):
    """A frozen copy of `unet` as the teacher, and `unet` moved off it (a student that differs)."""
    teacher = copy.deepcopy(unet).requires_grad_(False)
    with torch.no_grad():
        unet.conv_out.bias.add_(0.3)
    return teacher


def _one_step(method, unet, teacher, task, seed):
    """`method` prepared and one loss computed with a sampler seeded `seed`; and a sampler that replays its draws."""
    method.prepare(unet, task, torch.Generator().manual_seed(0), teacher=teacher)
    loss, logs = method.compute_loss(unet, Sampler(task, torch.Generator().manual_seed(seed), "cpu"))
    return loss, logs, Sampler(task, torch.Generator().manual_seed(seed), "cpu")


@pytest.mark.parametrize(("target_name", "guidance", "gate"),
                         [("anchor", 0.0, "none"), ("anchor", 1.5, "none"), ("base", 3.0, "none"),
                          ("anchor", 0.5, "posterior")])
def test_the_null_term_is_the_target_distance_on_a_forget_sub_batch_below_the_level(tiny_pipe, tiny_task,
                                                                                   target_name, guidance, gate):
    unet = tiny_pipe.unet
    teacher = _moved_off(unet)
    config = RLConfig(batch_size=6, alpha=0.5, null_target=target_name, null_weight=2.0, null_batch_size=3,
                      null_max_level=0.4, null_guidance=guidance, null_gate=gate)
    loss, logs, replay = _one_step(RLMethod(config), unet, teacher, tiny_task, 5)
    predict = lambda model, z, t, c: model(z, t, class_labels=c).sample  # noqa: E731
    forget = replay.forget(6)
    noisy = replay.noisy(forget.x0)
    with torch.no_grad():
        forget_loss = F.mse_loss(predict(unet, noisy.z_t, noisy.t, forget.cond),
                                 predict(unet, noisy.z_t, noisy.t, replay.anchor(forget.cond)))
        retain = replay.retain(6)
        rnoisy = replay.noisy(retain.x0)
        retain_loss = F.mse_loss(predict(unet, rnoisy.z_t, rnoisy.t, replay.drop(retain.cond, 0.1)), rnoisy.target)
        low = replay.noisy(forget.x0[:3], 0.4)
        assert (low.t < 0.4 * tiny_task.scheduler.config.num_train_timesteps).all()
        null = torch.full((3,), tiny_task.null)
        if target_name == "anchor":
            start = predict(teacher, low.z_t, low.t, replay.anchor(forget.cond[:3]))
        else:  # base: ESD's negatively guided target, on the null branch
            start = predict(teacher, low.z_t, low.t, null)
        target = start + guidance * (start - predict(teacher, low.z_t, low.t, forget.cond[:3]))
        if gate == "posterior":  # blended with the base's null prediction by the base's posterior of the concept
            ids = tiny_task.condition_ids("forget") + tiny_task.condition_ids("retain")
            conditional = torch.stack([predict(teacher, low.z_t, low.t, torch.full((3,), i)) for i in ids])
            base_null = predict(teacher, low.z_t, low.t, null)
            posterior = mixture_posterior(conditional, base_null)
            mass = posterior[:, :len(tiny_task.condition_ids("forget"))].sum(1).reshape(3, 1, 1, 1).float()
            assert ((mass > 0) & (mass < 1)).any()
            target = base_null + mass * (target - base_null)
        null_loss = F.mse_loss(predict(unet, low.z_t, low.t, null), target)
    assert logs["null_loss"] == pytest.approx(null_loss.item(), rel=1e-5)
    assert loss.item() == pytest.approx((forget_loss + 0.5 * retain_loss + 2.0 * null_loss).item(), rel=1e-5)


def test_the_null_term_guides_away_from_the_concept_where_found_conditions_stand(tiny_pipe, tiny_task):
    """With an attack in the loop, the first share of a forget batch carries found conditions; the null
    term on those samples is still guided away from the concept's own label, not from the found row."""
    unet = tiny_pipe.unet
    teacher = copy.deepcopy(unet).requires_grad_(False)
    found = tiny_task.add_adversary(unet.class_embedding.weight[2].detach().clone())  # a row that is not label 1
    tiny_task.adversarial_share = 1.0
    config = RLConfig(batch_size=4, alpha=0.0, null_target="anchor", null_batch_size=4, null_max_level=0.5,
                      null_guidance=2.0)
    method = RLMethod(config)
    method.prepare(unet, tiny_task, torch.Generator().manual_seed(0), teacher=teacher)
    forget = Sampler(tiny_task, torch.Generator().manual_seed(1), "cpu").forget(4)
    assert (forget.cond == found).all() and (forget.concept_cond == 1).all()

    def null_loss(batch):
        sampler = Sampler(tiny_task, torch.Generator().manual_seed(2), "cpu")
        return method.null_branch_loss(unet, sampler, batch, sampler.noisy(batch.x0)).item()

    with torch.no_grad():
        own = Batch(forget.x0, forget.concept_cond)  # the same samples under the concept's own label
        as_found = Batch(forget.x0, forget.cond)  # what the term used before: guided away from the found row
        assert null_loss(forget) == null_loss(own) and null_loss(forget) != null_loss(as_found)


def test_esd_adds_the_null_term_on_its_own_forget_batch(tiny_pipe, tiny_task):
    unet = tiny_pipe.unet
    teacher = copy.deepcopy(unet).requires_grad_(False)
    with torch.no_grad():
        unet.conv_out.bias.add_(0.3)
    method = ESDMethod(ESDConfig(batch_size=6, scope="all", null_target="base", null_guidance=2.0, null_weight=0.7,
                                 null_batch_size=4))
    method.prepare(unet, tiny_task, torch.Generator().manual_seed(0), teacher=teacher)
    loss, logs = method.compute_loss(unet, Sampler(tiny_task, torch.Generator().manual_seed(5), "cpu"))

    replay = Sampler(tiny_task, torch.Generator().manual_seed(5), "cpu")
    noisy = replay.noisy(replay.forget(6).x0)
    z, t = noisy.z_t[:4], noisy.t[:4]
    null, concept = torch.full((4,), tiny_task.null), torch.full((4,), 1)
    with torch.no_grad():
        e_0, e_c = teacher(z, t, class_labels=null).sample, teacher(z, t, class_labels=concept).sample
        null_loss = F.mse_loss(unet(z, t, class_labels=null).sample, e_0 - 2.0 * (e_c - e_0))
    assert logs["null_loss"] == pytest.approx(null_loss.item(), rel=1e-5)
    assert loss.item() == pytest.approx(logs["forget_loss"] + 0.7 * null_loss.item(), rel=1e-5)


def test_the_robust_recipe_moves_only_masked_weights_and_rebuilds_from_its_delta(tmp_path):
    """configs/digits-robust.yaml, cut to three steps: the null term is trained (logged, finite), weights
    outside the mask stay bit-identical to the base, weights inside move, and the delta rebuilds the UNet."""
    out = tmp_path / "robust"
    erasekit.erase(ROOT / "configs" / "digits-robust.yaml", forget=[3], output_dir=str(out), max_steps=3,
                   saliency_passes=1, evaluate=False, log_every=1)
    logs = [json.loads(x) for x in (out / "logs.jsonl").read_text().splitlines() if "null_loss" in x]
    assert len(logs) == 3 and all(math.isfinite(r["loss"]) and r["null_loss"] > 0 for r in logs)
    record = json.loads((out / "erasure.json").read_text())["config"]["method"]
    assert (record["null_target"], record["null_max_level"], record["label_dropout"]) == ("anchor", 0.6, 0.6)

    base = erasekit.load_pipeline("bundled:digits-cfg").unet
    mask = load_mask(out / "mask.safetensors", base)
    erased = erasekit.load_pipeline(out).unet.state_dict()
    moved = 0
    for name, param in base.state_dict().items():
        m = mask.masks[name]
        assert torch.equal(erased[name][~m], param[~m]), name
        moved += int((erased[name][m] != param[m]).sum())
    assert moved > 0.5 * sum(int(m.sum()) for m in mask.masks.values())
    apply_delta_to_pipeline("bundled:digits-cfg", out / "erasure_delta.safetensors", tmp_path / "applied")
    rebuilt = erasekit.load_pipeline(tmp_path / "applied").unet.state_dict()
    assert all(torch.equal(rebuilt[n], t) for n, t in erased.items())


def test_the_null_term_runs_on_a_text_model(tmp_path):
    """digits-t2i, cut small: the null condition is the empty prompt, the kept conditions the anchor prompts."""
    out = tmp_path / "t2i"
    erasekit.erase(ROOT / "configs" / "digits-t2i.yaml", output_dir=str(out), num_images_per_prompt=2,
                   generation_steps=3, saliency_passes=1, batch_size=4, max_steps=2, evaluate=False, log_every=1,
                   null_target="retain-mixture", null_gate="posterior", null_batch_size=2)
    logs = [json.loads(x) for x in (out / "logs.jsonl").read_text().splitlines() if "null_loss" in x]
    assert len(logs) == 2 and all(math.isfinite(r["null_loss"]) for r in logs)
    assert json.loads((out / "erasure.json").read_text())["config"]["method"]["null_gate"] == "posterior"


def _forget_term(unet, teacher, task, guidance, negative=0.0):
    method = RLMethod(RLConfig(batch_size=6, alpha=0.0, remap_guidance=guidance, remap_negative=negative))
    assert method.needs_teacher
    method.prepare(unet, task, torch.Generator().manual_seed(0), teacher=teacher)
    _, logs = method.compute_loss(unet, Sampler(task, torch.Generator().manual_seed(5), "cpu"))
    replay = Sampler(task, torch.Generator().manual_seed(5), "cpu")
    forget = replay.forget(6)
    return logs["forget_loss"], forget, replay.noisy(forget.x0), replay.anchor(forget.cond)


def test_the_guided_remap_matches_guided_outputs_wherever_the_null_branch_went(tiny_pipe, tiny_task):
    """remap_guidance g: the forget term is the distance between the student's CFG-guided output under the
    forget label (its own null prediction held) and the base's guided output under the remap label, over g^2;
    with the null branch where the base has it, that is SalUn's distance to the base's remap prediction."""
    unet = tiny_pipe.unet
    teacher = copy.deepcopy(unet).requires_grad_(False)
    predict = lambda model, z, t, c: model(z, t, class_labels=c).sample  # noqa: E731
    value, forget, noisy, anchor = _forget_term(unet, teacher, tiny_task, 3.0)
    with torch.no_grad():
        plain = F.mse_loss(predict(unet, noisy.z_t, noisy.t, forget.cond), predict(teacher, noisy.z_t, noisy.t, anchor))
    assert value == pytest.approx(plain.item(), rel=1e-5)

    with torch.no_grad():  # the student's null branch moves, its conditional branches do not
        unet.class_embedding.weight[tiny_task.null].add_(0.5)
    value, forget, noisy, anchor = _forget_term(unet, teacher, tiny_task, 3.0)
    null = torch.full((6,), tiny_task.null)
    with torch.no_grad():
        u, u0 = predict(unet, noisy.z_t, noisy.t, null), predict(teacher, noisy.z_t, noisy.t, null)
        guided = u + 3.0 * (predict(unet, noisy.z_t, noisy.t, forget.cond) - u)
        base_guided = u0 + 3.0 * (predict(teacher, noisy.z_t, noisy.t, anchor) - u0)
        expected = F.mse_loss(guided, base_guided) / 9.0
    assert not torch.allclose(u, u0) and value != pytest.approx(plain.item(), rel=1e-3)
    assert value == pytest.approx(expected.item(), rel=1e-4)


def test_the_negative_term_moves_the_guided_target_away_from_the_concept(tiny_pipe, tiny_task):
    """remap_negative eta: the base's guided target under the remap label, less eta times the base's own
    guidance toward the forget label."""
    unet = tiny_pipe.unet
    teacher = copy.deepcopy(unet).requires_grad_(False)
    predict = lambda model, z, t, c: model(z, t, class_labels=c).sample  # noqa: E731
    value, forget, noisy, anchor = _forget_term(unet, teacher, tiny_task, 3.0, negative=2.0)
    null = torch.full((6,), tiny_task.null)
    with torch.no_grad():
        u0, c0 = predict(teacher, noisy.z_t, noisy.t, null), predict(teacher, noisy.z_t, noisy.t, forget.cond)
        target = u0 + 3.0 * (predict(teacher, noisy.z_t, noisy.t, anchor) - u0) - 2.0 * (c0 - u0)
        expected = F.mse_loss(u0 + 3.0 * (c0 - u0), target) / 9.0  # student == base here
    assert value == pytest.approx(expected.item(), rel=1e-4)
    assert value != pytest.approx(_forget_term(unet, teacher, tiny_task, 3.0)[0], rel=1e-3)


def test_remap_guidance_is_off_or_a_guidance_scale():
    assert not RLMethod(RLConfig()).needs_teacher  # plain RL: no frozen copy of the base
    with pytest.raises(ConfigError, match="remap_guidance"):
        erasekit.SalUnConfig(remap_guidance=0.5)
    with pytest.raises(ConfigError, match="forget_weight"):
        erasekit.RLConfig(forget_weight=0.0)
    with pytest.raises(ConfigError, match="remap_negative"):  # acts on the guided target only
        erasekit.SalUnConfig(remap_negative=1.0)
    with pytest.raises(ConfigError, match="remap_negative"):
        erasekit.SalUnConfig(remap_guidance=3.0, remap_negative=-1.0)


def test_the_robust_text_recipe_trains_the_empty_prompt_branch(tmp_path):
    """configs/digits-t2i-robust.yaml, cut small: the null term on the empty prompt is trained and recorded,
    and the recipe's soft-prefix rounds run in the loop."""
    out = tmp_path / "t2i-robust"
    erasekit.erase(ROOT / "configs" / "digits-t2i-robust.yaml", output_dir=str(out), num_images_per_prompt=2,
                   generation_steps=3, saliency_passes=1, batch_size=4, null_batch_size=2, max_steps=4,
                   adversarial_steps=2, adversarial_samples=2, evaluate=False, log_every=1)
    lines = [json.loads(x) for x in (out / "logs.jsonl").read_text().splitlines()]
    logs = [r for r in lines if "null_loss" in r]
    assert len(logs) == 4 and all(math.isfinite(r["null_loss"]) and r["null_loss"] > 0 for r in logs)
    rounds = [(r["step"], r["adversarial_round"], r["adversarial_attack"]) for r in lines if "adversarial_round" in r]
    assert rounds == [(1, 1, "soft"), (2, 2, "soft"), (3, 3, "soft")]  # 3 rounds, after steps 1-3 of 4
    assert (out / FOUND_FILE).is_file()
    record = json.loads((out / "erasure.json").read_text())["config"]
    assert (record["method"]["null_target"], record["method"]["label_dropout"]) == ("anchor", 0.6)
    assert record["adversarial"]["adversarial_attack"] == "soft"


def test_the_data_denoiser_of_one_point_is_that_point_and_of_two_is_their_posterior_mean():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2, 1, 4, 4, generator=g)
    noise = torch.randn(3, 1, 4, 4, generator=g)
    a, s = torch.tensor([0.9, 0.6, 0.1]), torch.tensor([0.44, 0.8, 0.995])
    shape = (-1, 1, 1, 1)
    z = a.view(shape) * data[0] + s.view(shape) * noise
    x0, implied = data_denoiser(z, a, s, data[:1])
    assert torch.allclose(x0.float(), data[0].expand_as(x0)) and torch.allclose(implied.float(), noise, atol=1e-5)
    x0, _ = data_denoiser(z, a, s, data)
    flat = z.reshape(3, -1).double()
    d2 = torch.stack([((flat - a.double()[:, None] * data[j].reshape(1, -1).double()) ** 2).sum(1) for j in (0, 1)], 1)
    w = torch.softmax(-d2 / (2 * s.double()[:, None] ** 2), 1)
    assert torch.allclose(x0, (w @ data.reshape(2, -1).double()).reshape(x0.shape))
    assert w[0, 0] > 0.99 and 0.01 < w[2, 0] < 0.99  # the nearer point at low noise; a blend at high noise


def test_the_retain_data_target_of_a_one_sample_retain_set_is_its_diffusion_target(tiny_pipe):
    """What a model fitted to a single retain image predicts is that image's own regression target (v here)."""
    image = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    images, labels = torch.cat([image, image.flip(-1)]), torch.tensor([0, 1])
    task = ClassConditionalTask.for_pipeline(tiny_pipe, images, labels, forget=[1])
    assert tiny_pipe.scheduler.config.prediction_type == "v_prediction"
    noisy = task.noisy(image.expand(4, -1, -1, -1), torch.Generator().manual_seed(4), torch.tensor([0.3, 0.5, 0.7, 0.9]))
    assert torch.allclose(retain_data_target(task, noisy), noisy.target, atol=1e-4)


@pytest.mark.parametrize("guided", [False, True])
def test_the_retain_data_targets_stand_from_their_floor_and_the_anchor_below(tiny_pipe, tiny_task, guided):
    unet = tiny_pipe.unet
    teacher = _moved_off(unet)
    config = RLConfig(batch_size=8, alpha=0.0, null_target="retain-data", null_weight=2.0, null_batch_size=8,
                      forget_target="retain-data", data_min_level=0.4, remap_guidance=2.0 if guided else 0.0)
    _, logs, replay = _one_step(RLMethod(config), unet, teacher, tiny_task, 6)
    predict = lambda model, z, t, c: model(z, t, class_labels=c).sample  # noqa: E731
    forget = replay.forget(8)
    noisy = replay.noisy(forget.x0)
    high = (noisy.t >= 0.4 * tiny_task.scheduler.config.num_train_timesteps).view(-1, 1, 1, 1)
    assert high.any() and not high.all()
    null = torch.full((8,), tiny_task.null)
    with torch.no_grad():
        data = retain_data_target(tiny_task, noisy)
        if guided:  # the data target stands for the base's guided output; u, the student's null prediction
            u, u0 = predict(unet, noisy.z_t, noisy.t, null), predict(teacher, noisy.z_t, noisy.t, null)
            anchor = replay.anchor(forget.cond)
            output = torch.where(high, data, u0 + 2.0 * (predict(teacher, noisy.z_t, noisy.t, anchor) - u0))
            target = u + (output - u) / 2.0
        else:
            target = torch.where(high, data, predict(unet, noisy.z_t, noisy.t, replay.anchor(forget.cond)))
        forget_loss = F.mse_loss(predict(unet, noisy.z_t, noisy.t, forget.cond), target)
        retain = replay.retain(8)  # the retain term's draws, then the null term's anchor
        replay.noisy(retain.x0), replay.drop(retain.cond, 0.1)
        below = predict(teacher, noisy.z_t, noisy.t, replay.anchor(forget.cond))
        null_loss = F.mse_loss(predict(unet, noisy.z_t, noisy.t, null), torch.where(high, data, below))
    assert logs["forget_loss"] == pytest.approx(forget_loss.item(), rel=1e-5)
    assert logs["null_loss"] == pytest.approx(null_loss.item(), rel=1e-5)
