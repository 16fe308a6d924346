"""Baseline methods in the registry: ESD and GA losses against a brute-force recomputation, their
scopes, and an end-to-end erase through the one trainer."""

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from erasekit.erase.methods import ESDConfig, ESDMethod, GAConfig, GAMethod, RLConfig, RLMethod
from erasekit.erase.saliency import parameters_in_scope
from erasekit.erase.tasks import Sampler
from erasekit.errors import ConfigError

ROOT = Path(__file__).parents[2]


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


def test_retain_target_teacher_pulls_retain_predictions_to_the_frozen_base(tiny_pipe, tiny_task):
    unet = tiny_pipe.unet
    teacher = copy.deepcopy(unet).requires_grad_(False)
    method = RLMethod(RLConfig(batch_size=4, retain_target="teacher"))
    assert method.needs_teacher and not RLMethod(RLConfig()).needs_teacher
    method.prepare(unet, tiny_task, torch.Generator(), teacher=teacher)
    at_base = method.retain_loss(unet, Sampler(tiny_task, torch.Generator().manual_seed(3), "cpu"))
    at_base.backward()  # at the base the term and its gradient are exactly zero: no drift from noise targets
    assert at_base.item() == 0.0 and all(p.grad is None or not p.grad.any() for p in unet.parameters())

    unet.zero_grad(set_to_none=True)
    with torch.no_grad():
        unet.conv_out.bias.add_(0.3)
    loss = method.retain_loss(unet, Sampler(tiny_task, torch.Generator().manual_seed(3), "cpu"))
    replay = Sampler(tiny_task, torch.Generator().manual_seed(3), "cpu")
    retain = replay.retain(4)
    noisy = replay.noisy(retain.x0)
    cond = replay.drop(retain.cond, 0.1)
    with torch.no_grad():
        expected = ((unet(noisy.z_t, noisy.t, class_labels=cond).sample
                     - teacher(noisy.z_t, noisy.t, class_labels=cond).sample) ** 2).mean()
    assert (retain.cond != 1).all() and expected > 0
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-8)


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
    from tiny import tiny_sd_pipeline

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
    with pytest.raises(ConfigError, match="'retain_target' is 'base' but must be noise or teacher"):
        RLConfig(retain_target="base")
    from erasekit.erase.methods.uce import UCEConfig

    for field, value in (("rece_rounds", -1), ("rece_rounds", 1.5), ("rece_mu", 0.0)):
        with pytest.raises(ConfigError, match=f"'{field}'"):
            UCEConfig(**{field: value})


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


def test_uce_closed_form_matches_a_least_squares_reference():
    from erasekit.erase.methods.uce import uce_solve

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=g, dtype=torch.float64)
    c, c_star, p = (torch.randn(n, 5, generator=g, dtype=torch.float64) for n in (3, 3, 4))
    s, lam = 0.7, 0.1
    # min |W' c_i - W c*_i|^2 + s |W' p_j - W p_j|^2 + lam |W' - W|^2, as one stacked least-squares problem
    x = torch.cat([c, s**0.5 * p, lam**0.5 * torch.eye(5, dtype=torch.float64)])
    y = torch.cat([c_star @ w.T, s**0.5 * p @ w.T, lam**0.5 * w.T])
    expected = torch.linalg.lstsq(x, y).solution.T
    assert torch.allclose(uce_solve(w, c, c_star, p, s, lam), expected, atol=1e-10)


def test_rece_finds_what_the_edit_still_reads_as_the_concept_and_a_second_edit_erases_it():
    from erasekit.erase.methods.uce import rece_embeddings, uce_solve

    g = torch.Generator().manual_seed(1)
    originals = [torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(2)]
    c, c_star, p = (torch.randn(n, 5, generator=g, dtype=torch.float64) for n in (2, 2, 2))
    edited = [uce_solve(w, c, c_star, p, 1.0, 0.1) for w in originals]
    found = rece_embeddings(edited, originals, c, mu=0.05)
    # min sum_W |W' c' - W c|^2 + mu |c'|^2, stacked as one least-squares problem per embedding
    x = torch.cat([*edited, 0.05**0.5 * torch.eye(5, dtype=torch.float64)])
    y = torch.cat([*(w @ c.T for w in originals), torch.zeros(5, 2, dtype=torch.float64)])
    assert torch.allclose(found, torch.linalg.lstsq(x, y).solution.T, atol=1e-9)

    def gap(weights, inputs, reference):  # distance of the model's output for `inputs` from `reference`'s original
        return sum(float(((inputs @ w.T - reference @ o.T) ** 2).sum()) for w, o in zip(weights, originals))

    assert gap(edited, found, c) < 0.1 * gap(edited, c, c)  # after UCE, `found` still calls up the concept
    again = [uce_solve(w, torch.cat([c, found]), torch.cat([c_star, c_star]), p, 1.0, 0.1) for w in originals]
    assert gap(again, found, c) > 10 * gap(edited, found, c)  # after the second edit it no longer does
    assert gap(again, found, c_star) < 0.5 * gap(edited, found, c_star)  # it maps to the target instead


def test_rece_rounds_erase_more_embeddings_in_the_same_projections(tmp_path):
    """On digits-t2i: one RECE round erases as many embeddings again as UCE alone, and both edits change the
    cross-attention keys and values only (every other weight bit-identical to the base)."""
    import erasekit
    from erasekit.erase.methods.uce import KV_PROJECTIONS

    runs = {}
    for rounds in (0, 1):
        out = tmp_path / f"r{rounds}"
        erasekit.erase(ROOT / "configs" / "digits-t2i.yaml", method="uce", rece_rounds=rounds, output_dir=str(out),
                       evaluate=False)
        runs[rounds] = (erasekit.load_pipeline(out).unet.state_dict(),
                        json.loads((out / "erasure.json").read_text())["metrics"]["train"])
    base = erasekit.load_pipeline("bundled:digits-t2i").unet.state_dict()
    (plain, plain_log), (rece, rece_log) = runs[0], runs[1]
    assert rece_log["erased_embeddings"] == 2 * plain_log["erased_embeddings"] and plain_log["rece_embeddings"] == 0
    for name, weight in base.items():
        if KV_PROJECTIONS.search(name):
            assert not torch.equal(plain[name], weight) and not torch.equal(rece[name], plain[name])
        else:
            assert torch.equal(plain[name], weight) and torch.equal(rece[name], weight)


def test_uce_edits_only_cross_attention_keys_and_values_without_images(tmp_path, monkeypatch):
    import erasekit
    from erasekit.pipelines.adapters import adapter_for
    from tiny import tiny_sd_pipeline

    monkeypatch.setenv("ERASEKIT_CACHE", str(tmp_path / "cache"))
    tiny_sd_pipeline(seed=0).save_pretrained(tmp_path / "base")
    out = tmp_path / "uce"
    erasekit.erase(pretrained_model_name_or_path=str(tmp_path / "base"), output_dir=str(out), method="uce",
                   forget_prompts=["a photo of a church"], anchor_prompts=["a photo of a house"],
                   retain_prompts=["a photo of a tree", "a photo of a dog"], evaluate=False, resolution=32)
    assert not (tmp_path / "cache").exists()  # no image was generated
    base = erasekit.load_pipeline(tmp_path / "base")
    erased = erasekit.load_pipeline(out)
    before, after = base.unet.state_dict(), erased.unet.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".attn2.to_k.weight" in k or ".attn2.to_v.weight" in k for k in changed)
    assert {k for k in before if ".attn2.to_" in k and k.endswith((".to_k.weight", ".to_v.weight"))} == changed

    encode = adapter_for(base).encode_prompts
    church, house, tree = (encode([p], "cpu", None, 32)["encoder_hidden_states"][0]
                           for p in ("a photo of a church", "a photo of a house", "a photo of a tree"))
    name = next(k for k in sorted(changed) if k.endswith("to_k.weight"))
    w0, w1 = before[name], after[name]
    # keys of "church" move towards the keys "house" had; those of a retained prompt move less (the tiny
    # text space has 16 dimensions for 77-token prompts, so the trade-off is visible)
    assert (church @ w1.T - house @ w0.T).norm() < 0.6 * (church @ w0.T - house @ w0.T).norm()
    assert (tree @ w1.T - tree @ w0.T).norm() < (church @ w1.T - church @ w0.T).norm()
    record = json.loads((out / "erasure.json").read_text())
    assert record["method"] == "uce" and record["metrics"]["train"]["edited_projections"] == len(changed)


def test_uce_refuses_models_without_text_cross_attention(tmp_path):
    import erasekit

    with pytest.raises(ConfigError, match="method 'uce' supports SD 1.x/2.x/XL .* is a ClassConditionalPipeline"):
        erasekit.erase(method="uce", forget=[1], output_dir=str(tmp_path / "x"), evaluate=False)
    assert not (tmp_path / "x").exists()


def test_uce_with_the_sd3_recipe_names_the_families_it_supports(tmp_path, capsys):
    """The recipe's SalUn keys are set aside with one notice, and the refusal names the families."""
    from pathlib import Path

    from erasekit.cli import main
    from tiny import tiny_sd3_pipeline

    tiny_sd3_pipeline().save_pretrained(tmp_path / "sd3")
    recipe = Path(__file__).parents[2] / "configs" / "sd3-nudity.yaml"
    capsys.readouterr()
    code = main(["erase", "--config", str(recipe), "--method", "uce", "--pretrained-model-name-or-path",
                 str(tmp_path / "sd3"), "--output-dir", str(tmp_path / "x")])
    out, err = capsys.readouterr()
    assert code == 2 and err.strip() == ("erasekit erase: error: method 'uce' supports SD 1.x/2.x/XL (a UNet with text "
                                         "cross-attention), but 'sd3' is a StableDiffusion3Pipeline; choose salun, "
                                         "rl, esd or ga")
    notice = [line for line in out.splitlines() if "set aside" in line]
    assert len(notice) == 1 and "ratio" in notice[0] and "saliency_guidance" in notice[0]
    assert not (tmp_path / "x").exists()


def test_retrain_recipe_starts_from_fresh_weights_and_saves_the_ema(tmp_path):
    """configs/digits-retrain.yaml with its own settings, only shortened to 3 steps."""
    from pathlib import Path

    import erasekit
    from erasekit.pipelines.digits import build_digits_unet

    config = Path(__file__).parents[2] / "configs" / "digits-retrain.yaml"
    out = tmp_path / "retrain"
    erasekit.erase(config, forget=[8], output_dir=str(out), max_steps=3, lr_warmup_steps=1, evaluate=False)
    record = json.loads((out / "erasure.json").read_text())
    assert record["method"] == "retrain" and record["config"]["train"]["ema_decay"] == 0.999
    assert record["config"]["train"]["max_steps"] == 3 and record["config"]["method"]["init_seed"] == 0
    torch.manual_seed(0)
    fresh = build_digits_unet()
    retrained = erasekit.load_pipeline(out).unet
    base = erasekit.load_pipeline("bundled:digits-cfg").unet
    # Three steps from fresh weights: far closer to the fresh init than to the trained base.
    w_fresh, w_new, w_base = fresh.conv_in.weight, retrained.conv_in.weight, base.conv_in.weight
    assert (w_new - w_fresh).norm() < 0.1 * (w_base - w_fresh).norm()
    assert (w_new - w_fresh).abs().max() > 0


def test_trainer_saves_the_ema_and_keeps_unmasked_weights_exact(tiny_pipe, tiny_task, tmp_path):
    from erasekit.erase.methods import SalUnConfig, SalUnMethod
    from erasekit.erase.trainer import EraseTrainer, TrainConfig

    unet = tiny_pipe.unet
    base = copy.deepcopy(unet.state_dict())
    method = SalUnMethod(SalUnConfig(ratio=0.3, batch_size=8, saliency_batch_size=8, saliency_passes=1))
    method.prepare(unet, tiny_task, torch.Generator().manual_seed(0))
    trainer = EraseTrainer(unet, method, tiny_task, TrainConfig(seed=1, learning_rate=1e-2, max_steps=4,
                                                                ema_decay=0.9), tmp_path)
    trainer.train()
    shadow = dict(zip([n for n, p in trainer.denoiser.named_parameters() if p.requires_grad],
                      trainer.ema.shadow_params))
    after = trainer.denoiser.state_dict()
    assert shadow and all(torch.equal(after[n], v) for n, v in shadow.items())
    for name, m in method.mask.masks.items():
        assert torch.equal(after[name][~m], base[name][~m])
