"""Attack in the loop: conditions an attack finds become condition ids of the task, the forget batches carry
them, and an erase runs its rounds, keeps what they found and resumes with it."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import erasekit
from erasekit.adversarial import FOUND_FILE, AdversarialConfig, AdversarialRounds, frozen_for_attack
from erasekit.erase.tasks import ConditionTask, Sampler
from erasekit.errors import ConfigError

ROOT = Path(__file__).parents[1]


def test_a_found_row_stands_for_a_label_through_the_class_embedding(tiny_pipe, tiny_task):
    unet = tiny_pipe.unet
    z, t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 500, 900])
    found = tiny_task.add_adversary(unet.class_embedding.weight[2].detach().clone())
    assert found == tiny_task.null + 1 and tiny_task.adversary_ids == [found]
    with torch.no_grad():
        as_found = tiny_task.predict(unet, z, t, torch.tensor([found, 0, found]))
        as_label = tiny_task.predict(unet, z, t, torch.tensor([2, 0, 2]))
        other = tiny_task.predict(unet, z, t, torch.tensor([3, 0, 3]))
    assert torch.allclose(as_found, as_label, atol=1e-6) and not torch.allclose(as_found, other)
    # the hook is gone afterwards, and the row is trained through like any other input
    assert not unet.class_embedding._forward_hooks and not unet.class_embedding._forward_pre_hooks
    loss = tiny_task.predict(unet, z, t, torch.full((3,), found)).square().mean()
    loss.backward()
    assert unet.conv_out.weight.grad.abs().sum() > 0 and unet.class_embedding.weight.grad[2].abs().sum() == 0


def test_a_found_text_condition_is_a_new_row_of_every_conditioning_tensor():
    table = {"encoder_hidden_states": torch.randn(3, 4, 8), "pooled": torch.randn(3, 8)}
    task = ConditionTask(None, None, torch.zeros(2, 1, 2, 2), torch.tensor([1, 1]), torch.zeros(2, 1, 2, 2),
                         torch.tensor([2, 2]), anchors=[2], null=0, table=dict(table), prompt_table=["", "a", "b"])
    row = {"encoder_hidden_states": torch.randn(1, 4, 8), "pooled": torch.randn(1, 8)}
    assert task.add_adversary(row) == 3
    cond = task.conditions(torch.tensor([3, 1]))
    assert torch.equal(cond["encoder_hidden_states"][0], row["encoder_hidden_states"][0])
    assert torch.equal(cond["pooled"][1], table["pooled"][1]) and task.prompt_table[3].startswith("<found")
    with pytest.raises(ValueError, match="pooled"):
        task.add_adversary({"encoder_hidden_states": torch.randn(1, 4, 8)})


def test_forget_batches_carry_found_conditions_in_their_share_only_once_there_are_some(tiny_task):
    def draw():
        return Sampler(tiny_task, torch.Generator().manual_seed(3), "cpu").forget(8)

    tiny_task.adversarial_share = 0.5
    before = draw()
    assert (before.cond == 1).all()  # nothing found yet: the concept's own label, the same draws as without
    tiny_task.add_adversary(torch.zeros(tiny_task.adapter.denoiser.class_embedding.embedding_dim))
    after = draw()
    assert torch.equal(after.x0, before.x0)
    assert (after.cond[:4] == tiny_task.null + 1).all() and (after.cond[4:] == 1).all()


def test_the_attack_leaves_the_trained_weights_trainable(tiny_pipe):
    unet = tiny_pipe.unet.train()
    unet.requires_grad_(False)
    unet.conv_out.weight.requires_grad_(True)
    with frozen_for_attack(unet):
        unet.requires_grad_(False).eval()  # what a Victim does to every part of its pipeline
    assert unet.training and unet.conv_out.weight.requires_grad and not unet.conv_in.weight.requires_grad


@pytest.mark.parametrize(("key", "value", "match"), [
    ("adversarial_attack", "trajectory", "finds no condition"), ("adversarial_attack", "nope", "registered"),
    ("adversarial_share", 0.0, "adversarial_share"), ("adversarial_rounds", -1, "adversarial_rounds")])
def test_a_bad_adversarial_setting_names_the_field(key, value, match):
    with pytest.raises(ConfigError, match=match):
        AdversarialConfig(**{key: value})


def test_a_text_attack_is_refused_on_a_class_conditional_model_before_training(tmp_path):
    with pytest.raises(ConfigError, match="needs a text model"):
        erasekit.erase(ROOT / "configs" / "digits.yaml", forget=[3], output_dir=str(tmp_path / "o"),
                       adversarial_rounds=1, adversarial_attack="uda")
    assert not (tmp_path / "o").exists()


def test_rounds_need_training_steps(tmp_path):
    with pytest.raises(ConfigError, match="rece_rounds"):
        erasekit.erase(ROOT / "configs" / "digits-t2i.yaml", method="uce", output_dir=str(tmp_path / "o"),
                       adversarial_rounds=1)


def _erase(out, rounds=2):
    return erasekit.erase(ROOT / "configs" / "digits-robust.yaml", forget=[3], output_dir=str(out), max_steps=6,
                          saliency_passes=1, evaluate=False, log_every=1, adversarial_rounds=rounds, adversarial_steps=3,
                          adversarial_samples=8)


def test_an_erase_runs_its_rounds_and_keeps_what_they_found(tmp_path):
    out = tmp_path / "adv"
    _erase(out)
    rounds = [json.loads(x) for x in (out / "logs.jsonl").read_text().splitlines() if "adversarial_round" in x]
    assert [(r["step"], r["adversarial_round"], r["adversarial_attack"]) for r in rounds] == [(2, 1, "cce"), (4, 2, "cce")]
    assert all(r["attack_steps"] == 3 and r["final_loss"] > 0 for r in rounds)
    found = load_file(out / FOUND_FILE)
    assert sorted(found) == ["2/class_embedding", "4/class_embedding"] and not torch.equal(*found.values())
    record = json.loads((out / "erasure.json").read_text())["config"]
    assert record["adversarial"]["adversarial_rounds"] == 2
    assert "Attack in the loop: 2 round(s) of `cce` (3 steps each)" in (out / "README.md").read_text()
    plain = tmp_path / "plain"
    _erase(plain, rounds=0)
    trained = [erasekit.load_pipeline(d).unet.state_dict() for d in (out, plain)]
    assert not all(torch.equal(trained[0][n], trained[1][n]) for n in trained[0])  # the found rows were trained on


def test_a_resumed_run_trains_on_the_conditions_found_up_to_its_checkpoint(tiny_task, tmp_path, monkeypatch):
    found = {"2/class_embedding": torch.ones(4), "5/class_embedding": 2 * torch.ones(4)}
    save_file(found, str(tmp_path / FOUND_FILE))
    config = AdversarialConfig(adversarial_rounds=3)
    rounds = AdversarialRounds(config, None, tiny_task, {"forget_classes": [1]}, 0, tmp_path, 8, resume_from=4)
    assert rounds.at == [2, 4, 6]  # resumed from step 4: the round at 2 counts, the one after it (5) is run again
    assert tiny_task.adversary_ids == [tiny_task.null + 1] and torch.equal(tiny_task.adversary_rows[0], torch.ones(4))
    assert rounds.missed == [4]  # due at the checkpoint, not saved: it runs at the first step resumed
    ran = []
    monkeypatch.setattr(rounds, "run_round", lambda trainer, at, step: ran.append((at, step)))
    for step in (5, 6, 7):
        rounds(None, step, {})
    assert ran == [(4, 5), (6, 6)]


def test_rounds_run_on_a_text_model(tmp_path):
    out = tmp_path / "t2i"
    erasekit.erase(ROOT / "configs" / "digits-t2i.yaml", output_dir=str(out), num_images_per_prompt=2,
                   generation_steps=3, saliency_passes=1, batch_size=4, max_steps=2, evaluate=False, log_every=1,
                   adversarial_rounds=1, adversarial_attack="soft", adversarial_steps=2, adversarial_samples=2)
    rounds = [json.loads(x) for x in (out / "logs.jsonl").read_text().splitlines() if "adversarial_round" in x]
    assert [r["step"] for r in rounds] == [1]
    found = load_file(out / FOUND_FILE)
    assert found and all(name.startswith("1/") for name in found)
    assert found["1/encoder_hidden_states"].shape[0] == 1


def test_rounds_take_the_forget_classes_in_turn(tiny_task, tmp_path):
    rounds = AdversarialRounds(AdversarialConfig(adversarial_rounds=3), None, tiny_task,
                               {"forget_classes": [1, 2]}, 0, tmp_path, 8)
    assert [rounds.target(at) for at in rounds.at] == [1, 2, 1]
