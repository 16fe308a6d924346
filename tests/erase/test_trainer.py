import copy

import pytest
import torch

from erasekit.erase.methods import RLConfig, RLMethod, SalUnConfig, SalUnMethod
from erasekit.erase.trainer import EraseTrainer, TrainConfig, find_checkpoint
from erasekit.errors import ConfigError


def _salun(unet, task, ratio=0.3):
    method = SalUnMethod(SalUnConfig(ratio=ratio, batch_size=8, saliency_batch_size=8, saliency_passes=1))
    method.prepare(unet, task, torch.Generator().manual_seed(0))
    return method


def _train(unet, method, task, work, **overrides):
    config = TrainConfig(**{"seed": 3, "learning_rate": 1e-2, "max_steps": 6, "log_every": 1, **overrides})
    trainer = EraseTrainer(unet, method, task, config, work)
    return trainer, trainer.train()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_weights_outside_mask_are_bit_identical_and_inside_move(tiny_pipe, tiny_task, tmp_path, weight_decay):
    unet = tiny_pipe.unet
    before = copy.deepcopy(unet.state_dict())
    method = _salun(unet, tiny_task)
    _, last = _train(unet, method, tiny_task, tmp_path, weight_decay=weight_decay)
    assert torch.isfinite(torch.tensor(last["loss"]))
    moved_inside = 0
    for name, param in unet.named_parameters():
        mask = method.mask.masks[name]
        assert torch.equal(param.detach()[~mask], before[name][~mask]), name
        moved_inside += int((param.detach()[mask] != before[name][mask]).sum())
    assert moved_inside > 0.9 * method.mask.selected


def test_rl_moves_every_weight_in_scope_only(tiny_pipe, tiny_task, tmp_path):
    unet = tiny_pipe.unet
    before = copy.deepcopy(unet.state_dict())
    _train(unet, RLMethod(RLConfig(batch_size=8, scope="attn")), tiny_task, tmp_path)
    for name, param in unet.named_parameters():
        changed = not torch.equal(param.detach(), before[name])
        assert changed == (".attentions." in name and ".to_" in name), name


def test_resumed_run_ends_with_the_same_weights(tiny_pipe, tiny_task, tmp_path):
    base = copy.deepcopy(tiny_pipe.unet)
    method = _salun(base, tiny_task)

    straight = copy.deepcopy(base)
    _train(straight, method, tiny_task, tmp_path / "straight", max_steps=8)

    class Interrupt(Exception):
        pass

    def stop_at_5(trainer, step, logs):
        if step == 5:
            raise Interrupt

    interrupted = copy.deepcopy(base)
    config = TrainConfig(seed=3, learning_rate=1e-2, max_steps=8, checkpointing_steps=2, checkpoints_total_limit=2)
    with pytest.raises(Interrupt):
        EraseTrainer(interrupted, method, tiny_task, config, tmp_path / "resumed", callbacks=[stop_at_5]).train()
    checkpoints = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]  # total limit 2, no half-written directories
    assert find_checkpoint(tmp_path / "resumed", "latest").name == "checkpoint-4"

    resumed = copy.deepcopy(base)  # a fresh process would start from the base weights
    config.resume_from_checkpoint = "latest"
    EraseTrainer(resumed, method, tiny_task, config, tmp_path / "resumed").train()
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


def test_same_seed_same_weights(tiny_pipe, tiny_task, tmp_path):
    base = copy.deepcopy(tiny_pipe.unet)
    method = _salun(base, tiny_task)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    _train(a, method, tiny_task, tmp_path / "a", gradient_accumulation_steps=2)
    _train(b, method, tiny_task, tmp_path / "b", gradient_accumulation_steps=2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_bf16_autocast_keeps_fp32_master_weights_and_mask(tiny_pipe, tiny_task, tmp_path):
    unet = tiny_pipe.unet
    before = copy.deepcopy(unet.state_dict())
    method = _salun(unet, tiny_task)
    _, last = _train(unet, method, tiny_task, tmp_path, mixed_precision="bf16", max_steps=3)
    assert torch.isfinite(torch.tensor(last["loss"]))
    for name, param in unet.named_parameters():
        assert param.dtype == torch.float32
        mask = method.mask.masks[name]
        assert torch.equal(param.detach()[~mask], before[name][~mask])


def test_logs_are_json_lines(tiny_pipe, tiny_task, tmp_path):
    import json

    _train(tiny_pipe.unet, _salun(tiny_pipe.unet, tiny_task), tiny_task, tmp_path, max_steps=3)
    records = [json.loads(line) for line in (tmp_path / "logs.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert {"loss", "forget_loss", "retain_loss", "lr"} <= set(records[0])


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint exists"):
        find_checkpoint(tmp_path, "latest")
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        find_checkpoint(tmp_path, str(tmp_path / "missing"))


class _NaNAt(RLMethod):
    """RL whose loss is NaN on the listed calls (1-based)."""

    def __init__(self, bad_calls):
        super().__init__(RLConfig(batch_size=8))
        self.calls, self.bad = 0, set(bad_calls)

    def compute_loss(self, denoiser, sampler):
        self.calls += 1
        loss, logs = super().compute_loss(denoiser, sampler)
        return (loss * float("nan"), logs) if self.calls in self.bad else (loss, logs)


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tiny_pipe, tiny_task, tmp_path):
    from erasekit.errors import NonFiniteError

    with pytest.raises(NonFiniteError, match=r"the loss was nan at step 5 .*checkpoint-4, is kept.*--skip-nonfinite"):
        _train(tiny_pipe.unet, _NaNAt({5}), tiny_task, tmp_path, checkpointing_steps=2)
    assert find_checkpoint(tmp_path, "latest").name == "checkpoint-4"


def test_skip_nonfinite_skips_bad_steps_without_touching_the_weights(tiny_pipe, tiny_task, tmp_path):
    unet = tiny_pipe.unet
    seen = []

    def watch(trainer, step, logs):
        seen.append((step, "skipped" in logs, {k: v.clone() for k, v in trainer.denoiser.state_dict().items()}))

    config = TrainConfig(seed=3, learning_rate=1e-2, max_steps=5, skip_nonfinite=2)
    EraseTrainer(unet, _NaNAt({2, 4}), tiny_task, config, tmp_path, callbacks=[watch]).train()
    assert [s for s, skipped, _ in seen if skipped] == [2, 4]
    for (_, _, before), (_, skipped, after) in zip(seen, seen[1:]):
        assert all(torch.equal(before[k], after[k]) for k in before) == skipped
    assert all(torch.isfinite(v).all() for v in unet.state_dict().values())
    config = TrainConfig(seed=3, learning_rate=1e-2, max_steps=5, skip_nonfinite=1)
    from erasekit.errors import NonFiniteError

    with pytest.raises(NonFiniteError, match="at step 4 .2 non-finite step.s., 1 allowed"):
        EraseTrainer(unet, _NaNAt({2, 4}), tiny_task, config, tmp_path / "b").train()
