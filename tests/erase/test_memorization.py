"""Memorization proxies: the CFG gain against a draw-by-draw reference, the low/medium/high split, and
`erasekit memorization` end to end on the bundled digits model."""

import json

import pytest
import torch

from erasekit.cli import main
from erasekit.erase.fisher import stratified_levels
from erasekit.erase.memorization import PROXIES, MemorizationConfig, partition
from erasekit.errors import ConfigError


def _reference(denoiser, task, x, c, seed, draws, proxy="cfg_gain"):
    """One sample and one draw at a time, averaged over draws: l(null) - l(c) with the same noisy input
    (cfg_gain), or the mean squared difference of the two predictions (cond_magnitude)."""
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
                if proxy == "cfg_gain":
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
    assert record["proxy"] == "cfg_gain" and record["forget"] == [8] and record["draws"] == 2
    samples = record["samples"]
    assert len(samples) == sum(p["count"] for p in record["parts"].values()) > 100
    assert all(s["label"] == 8 for s in samples)
    by_part = {p: [s["score"] for s in samples if s["part"] == p] for p in ("low", "medium", "high")}
    assert max(by_part["low"]) <= min(by_part["medium"]) and max(by_part["medium"]) <= min(by_part["high"])
    assert main(args) == 2 and "already exists" in capsys.readouterr().err  # never overwritten silently


@pytest.mark.parametrize("bad, field", [
    ({"forget": []}, "forget"), ({"forget": ["8"]}, "forget"), ({"data": "mnist"}, "data"),
    ({"proxy": "loss"}, "proxy"), ({"draws": 0}, "draws"), ({"batch_size": 1.5}, "batch_size"),
    ({"model": None}, "model"),
])
def test_bad_memorization_settings_name_the_field(bad, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        MemorizationConfig(**{"model": "bundled:digits-cfg", "forget": [8], **bad})
