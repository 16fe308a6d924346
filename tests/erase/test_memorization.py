"""Memorization proxies: the CFG gain against a draw-by-draw reference, the running training loss and the
holdout divergence, the low/medium/high split, and `erasekit memorization` end to end on the bundled
digits model."""

import json
import shutil
import tempfile

import pytest
import torch

from erasekit.cli import main
from erasekit.erase.fisher import stratified_levels
from erasekit.erase.memorization import (
    PROXIES,
    TRAINING_LOSSES,
    MemorizationConfig,
    TrainingLosses,
    holdout_divergence,
    partition,
    prompt_magnitude,
    training_loss_scores,
)
from erasekit.erase.methods import FinetuneConfig, FinetuneMethod
from erasekit.erase.objectives import diffusion_loss
from erasekit.erase.tasks import ClassConditionalTask, Sampler
from erasekit.erase.trainer import EraseTrainer, TrainConfig
from erasekit.errors import ConfigError
from erasekit.pipelines.loading import bundled_path


def _reference(denoiser, task, x, c, seed, draws, proxy="cfg_gain"):
    """One sample and one draw at a time, averaged over draws: l(c) (loss), l(null) - l(c) with the same
    noisy input (cfg_gain), or the mean squared difference of the two predictions (cond_magnitude)."""
    levels = stratified_levels(draws)
    out = []
    with torch.no_grad():
        for i in range(len(x)):
            noisy = task.noisy(x[i:i + 1].expand(draws, *x.shape[1:]), torch.Generator().manual_seed(seed + i),
                               levels)
            total = 0.0
            for j in range(draws):
                z, t, target = noisy.z_t[j:j + 1], noisy.t[j:j + 1], noisy.target[j:j + 1]
                cond = c[i:i + 1]
                with_c, without = task.predict(denoiser, z, t, cond), task.predict(denoiser, z, t, task.null_cond(cond))
                if proxy == "loss":
                    total += float((with_c - target).pow(2).mean())
                elif proxy == "cfg_gain":
                    total += float((without - target).pow(2).mean() - (with_c - target).pow(2).mean())
                else:
                    total += float((with_c - without).pow(2).mean())
            out.append(total / draws)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("proxy", sorted(PROXIES))
def test_proxies_match_the_draw_by_draw_reference_for_any_batch_size(tiny_pipe, tiny_task, proxy):
    x, c = tiny_task.forget_x[:5], tiny_task.forget_c[:5]
    expected = _reference(tiny_pipe.unet, tiny_task, x, c, seed=3, draws=4, proxy=proxy)
    assert expected.abs().min() > 0
    for batch_size in (1, 2, 5):
        got = PROXIES[proxy](tiny_pipe.unet, tiny_task, x, c, seed=3, draws=4, batch_size=batch_size)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert not torch.equal(PROXIES[proxy](tiny_pipe.unet, tiny_task, x, c, seed=4, draws=4), got)  # the seed matters


def test_partition_splits_by_rank_in_thirds_with_ties_by_index():
    scores = torch.tensor([0.5, 0.1, 0.9, 0.1, 0.7, 0.3, 0.2])
    parts = partition(scores)
    assert [len(parts[p]) for p in ("low", "medium", "high")] == [3, 2, 2]
    assert parts["low"].tolist() == [1, 3, 6] and parts["medium"].tolist() == [5, 0]
    assert parts["high"].tolist() == [4, 2]


def test_the_memorization_command_writes_scores_and_parts(tmp_path, capsys):
    out = tmp_path / "scores.json"
    args = ["memorization", "--model", "bundled:digits-cfg", "--forget", "8", "--draws", "2", "--output", str(out)]
    assert main(args) == 0
    record = json.loads(out.read_text())
    assert record["proxy"] == "loss" and record["forget"] == [8] and record["draws"] == 2
    samples = record["samples"]
    assert len(samples) == sum(p["count"] for p in record["parts"].values()) > 100
    assert all(s["label"] == 8 for s in samples)
    by_part = {p: [s["score"] for s in samples if s["part"] == p] for p in ("low", "medium", "high")}
    assert max(by_part["low"]) <= min(by_part["medium"]) and max(by_part["medium"]) <= min(by_part["high"])
    assert main(args) == 2 and "already exists" in capsys.readouterr().err  # never overwritten silently


@pytest.mark.parametrize("bad, field", [
    ({"forget": []}, "forget"), ({"forget": ["8"]}, "forget"), ({"data": "mnist"}, "data"),
    ({"proxy": "memorized"}, "proxy"), ({"draws": 0}, "draws"), ({"batch_size": 1.5}, "batch_size"),
    ({"model": None}, "model"), ({"holdout_steps": 0}, "holdout_steps"), ({"holdout_lr": 0}, "holdout_lr"),
    ({"holdout_lr": "fast"}, "holdout_lr"), ({"proxy": "holdout", "data": "generated"}, "data"),
    ({"proxy": "training_loss", "data": "generated"}, "data"),
])
def test_bad_memorization_settings_name_the_field(bad, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        MemorizationConfig(**{"model": "bundled:digits-cfg", "forget": [8], **bad})


def test_finetuning_records_each_conditional_draws_own_loss(tiny_pipe, tiny_task):
    unet, n = tiny_pipe.unet, len(tiny_task.retain_c)
    recorder = TrainingLosses(n)
    method = FinetuneMethod(FinetuneConfig(batch_size=24, label_dropout=0.4), recorder)
    loss, _ = method.compute_loss(unet, Sampler(tiny_task, torch.Generator().manual_seed(5), "cpu"))

    g = torch.Generator().manual_seed(5)  # the same draws, one sample at a time
    batch = tiny_task.retain_batch(24, g)
    noisy = tiny_task.noisy(batch.x0, g)
    cond = tiny_task.drop_cond(batch.cond, 0.4, g)
    total, draws = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.long)
    with torch.no_grad():
        for j in range(24):
            if int(cond[j]) == tiny_task.null:
                continue
            pred = tiny_task.predict(unet, noisy.z_t[j:j + 1], noisy.t[j:j + 1], cond[j:j + 1])
            total[batch.index[j]] += float((pred - noisy.target[j:j + 1]).pow(2).mean())
            draws[batch.index[j]] += 1
        expected_loss = diffusion_loss(lambda z, t, c: tiny_task.predict(unet, z, t, c), noisy, cond)
    assert 0 < int(draws.sum()) < 24  # some draws kept their label, some were dropped to null
    assert torch.equal(recorder.draws, draws)
    torch.testing.assert_close(recorder.total, total, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(loss.detach(), expected_loss, rtol=1e-5, atol=1e-7)
    seen = draws > 0
    torch.testing.assert_close(recorder.means()[seen], (total / draws)[seen], rtol=1e-4, atol=1e-7)


def test_training_loss_scores_read_the_record_at_the_training_positions(tmp_path, tiny_pipe):
    tiny_pipe.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=f"no {TRAINING_LOSSES}.*train-base"):
        training_loss_scores(str(tmp_path), torch.tensor([0]), 6)
    recorder = TrainingLosses(6)
    recorder.add(torch.tensor([0, 2, 2, 5]), torch.tensor([1.0, 2.0, 4.0, 0.5]))
    recorder.save(tmp_path / TRAINING_LOSSES, {"split": "train"})
    scores = training_loss_scores(str(tmp_path), torch.tensor([5, 2, 1]), 6)
    assert scores.tolist() == [0.5, 3.0, 0.0]
    with pytest.raises(ConfigError, match="holds 6 losses but the data has 7"):
        training_loss_scores(str(tmp_path), torch.tensor([0]), 7)
    (tmp_path / TRAINING_LOSSES).write_text("{}")
    with pytest.raises(ConfigError, match="not a training-loss record"):
        training_loss_scores(str(tmp_path), torch.tensor([0]), 6)


def test_the_memorization_command_scores_by_recorded_training_loss(tmp_path, capsys):
    from erasekit.pipelines.digits import load_digits_16

    model = tmp_path / "digits"
    shutil.copytree(bundled_path("digits-cfg"), model)
    labels = load_digits_16().train_labels
    recorder = TrainingLosses(len(labels))
    recorder.add(torch.arange(len(labels)), torch.arange(len(labels), dtype=torch.float64) / 1000)
    recorder.save(model / TRAINING_LOSSES, {"split": "train"})
    out = tmp_path / "scores.json"
    assert main(["memorization", "--model", str(model), "--forget", "8", "--proxy", "training_loss",
                 "--output", str(out)]) == 0
    samples = json.loads(out.read_text())["samples"]
    eights = torch.nonzero(labels == 8).squeeze(1).tolist()
    assert [s["index"] for s in samples] == eights
    assert [s["score"] for s in samples] == pytest.approx([i / 1000 for i in eights])
    (model / TRAINING_LOSSES).unlink()
    assert main(["memorization", "--model", str(model), "--forget", "8", "--proxy", "training_loss",
                 "--output", str(tmp_path / "again.json")]) == 2
    err = capsys.readouterr().err
    assert TRAINING_LOSSES in err and "Traceback" not in err


def test_holdout_divergence_is_the_error_rise_after_finetuning_on_held_out_data(tiny_pipe, tiny_task):
    unet = tiny_pipe.unet
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    x, c = tiny_task.forget_x[:4], tiny_task.forget_c[:4]
    hx, hc = tiny_task.retain_x[:12], tiny_task.retain_c[:12]
    got = holdout_divergence(unet, tiny_task, x, c, hx, hc, seed=2, draws=3, batch_size=2, steps=4,
                             learning_rate=1e-2)
    assert all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())  # the model is left as it was

    tuned = type(unet).from_config(unet.config)  # the same fine-tuning, by hand
    tuned.load_state_dict(before)
    holdout = ClassConditionalTask(tiny_task.adapter, tiny_task.scheduler, hx, hc, forget=[])
    with tempfile.TemporaryDirectory() as work:
        EraseTrainer(tuned.train(), FinetuneMethod(FinetuneConfig(batch_size=128)), holdout,
                     TrainConfig(seed=2, learning_rate=1e-2, max_steps=4, log_every=4), work).train()
    expected = (_reference(tuned.eval(), tiny_task, x, c, 2, 3, proxy="loss")
                - _reference(unet, tiny_task, x, c, 2, 3, proxy="loss"))
    assert expected.abs().min() > 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)
    on_holdout = holdout_divergence(unet, tiny_task, hx, hc, hx, hc, seed=2, draws=3, steps=4, learning_rate=1e-2)
    assert on_holdout.mean() < 0  # the data it was tuned on got easier


def test_the_memorization_command_scores_by_holdout_divergence(tmp_path):
    out = tmp_path / "scores.json"
    assert main(["memorization", "--model", "bundled:digits-cfg", "--forget", "8", "--proxy", "holdout",
                 "--draws", "2", "--holdout-steps", "3", "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["proxy"] == "holdout" and record["holdout_steps"] == 3 and record["holdout_lr"] == 1e-4
    scores = [s["score"] for s in record["samples"]]
    assert len(scores) > 100 and len(set(scores)) == len(scores)


@pytest.mark.parametrize("family", ["sd1", "sdxl", "flux"])
def test_prompt_magnitude_matches_the_draw_by_draw_reference(family):
    from erasekit.pipelines.adapters import adapter_for
    from tiny import tiny_flux_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline

    pipe = {"sd1": tiny_sd_pipeline, "sdxl": tiny_sdxl_pipeline, "flux": tiny_flux_pipeline}[family]()
    adapter = adapter_for(pipe)
    scheduler, shape = adapter.training_scheduler(), adapter.sample_shape(32)
    conditions = adapter.encode_prompts(["", "a red apple", "a photo of a cat"], "cpu", None, 32)
    got = prompt_magnitude(adapter.denoiser, adapter, scheduler, conditions, seed=7, draws=3, shape=shape)
    expected = []
    with torch.no_grad():
        for k in (1, 2):
            z, t = adapter.pure_noise(scheduler, 3, shape, torch.Generator().manual_seed(7 + k))
            total = 0.0
            for j in range(3):
                pick = {name: value[[k]] for name, value in conditions.items()}
                empty = {name: value[[0]] for name, value in conditions.items()}
                a = adapter.predict(adapter.denoiser, z[j:j + 1], t[j:j + 1], pick)
                b = adapter.predict(adapter.denoiser, z[j:j + 1], t[j:j + 1], empty)
                total += float((a - b).pow(2).mean())
            expected.append(total / 3)
    assert min(expected) > 0
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-9)
    z, t = adapter.pure_noise(scheduler, 2, shape, torch.Generator().manual_seed(0))
    top = 1000.0 * float(scheduler.sigmas.max()) if family == "flux" else scheduler.config.num_train_timesteps - 1
    assert z.shape == (2, *shape) and t.tolist() == [top, top]  # where sampling starts


def test_the_memorization_command_scores_prompts_of_a_text_to_image_model(tmp_path, capsys):
    from tiny import tiny_sd_pipeline

    model = tmp_path / "sd"
    tiny_sd_pipeline().save_pretrained(model)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red apple\n\na photo of a cat\nan oil painting of a bridge\n")
    out = tmp_path / "scores.json"
    assert main(["memorization", "--model", str(model), "--prompts", str(prompts), "--draws", "2",
                 "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["proxy"] == "cond_magnitude"
    assert [s["prompt"] for s in record["samples"]] == ["a red apple", "a photo of a cat", "an oil painting of a bridge"]
    assert sorted(s["part"] for s in record["samples"]) == ["high", "low", "medium"]
    assert all(s["score"] > 0 for s in record["samples"])
    cases = [(["--prompts", str(prompts), "--proxy", "cfg_gain"], "'proxy'"),
             ([], "--prompts FILE"),
             (["--prompts", str(tmp_path / "none.txt")], "'prompts'")]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    cases.append((["--prompts", str(empty)], "has no prompt"))
    for extra, message in cases:
        assert main(["memorization", "--model", str(model), *extra, "--output", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert main(["memorization", "--model", "bundled:digits-cfg", "--prompts", str(prompts),
                 "--output", str(tmp_path / "x.json")]) == 2
    assert "--forget C" in capsys.readouterr().err


def test_train_base_writes_the_running_losses_beside_the_weights(tmp_path):
    from erasekit.recipes.train_base import DigitsBaseConfig, train_digits_base

    train_digits_base(DigitsBaseConfig(output_dir=str(tmp_path), max_steps=2, select_every=1,
                                       select_samples_per_class=2, classifier_epochs=1))
    record = json.loads((tmp_path / "digits-cfg" / TRAINING_LOSSES).read_text())
    assert record["count"] == 1437 and record["split"] == "train" and "train-base digits" in record["command"]
    draws = torch.tensor(record["draws"])
    assert 200 < int(draws.sum()) <= 2 * 128  # two batches of 128, less the ~10% whose label was dropped
    seen = draws > 0
    assert all(v > 0 for v in torch.tensor(record["mean_loss"])[seen]) and all(
        v == 0 for v in torch.tensor(record["mean_loss"])[~seen])


def test_the_bundled_digits_model_ships_its_running_losses():
    scores = training_loss_scores("bundled:digits-cfg", torch.arange(1437), 1437)
    record = json.loads((bundled_path("digits-cfg") / TRAINING_LOSSES).read_text())
    assert min(record["draws"]) > 200 and float(scores.min()) > 0  # every image was drawn hundreds of times
