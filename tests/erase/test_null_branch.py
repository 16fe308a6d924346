"""The null-branch target (`null_target`): the posterior read from a model's own predictions, the mixture
of the kept conditions, and an erase that trains the unconditional branch on forget samples."""

import json

import pytest
import torch

import erasekit
from erasekit.erase.objectives import mixture_posterior, project_to_simplex, retain_mixture_target
from erasekit.errors import ConfigError


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


@pytest.mark.parametrize("target", ["retain-mixture", "anchor"])
def test_an_erase_trains_the_null_branch_when_asked(tmp_path, target):
    out = tmp_path / "out"
    erasekit.erase("configs/digits.yaml", forget=[3], output_dir=str(out), null_target=target, null_weight=0.5,
                   max_steps=2, saliency_passes=1, evaluate=False, log_every=1)
    logs = [json.loads(x) for x in (out / "logs.jsonl").read_text().splitlines() if "null_loss" in x]
    assert len(logs) == 2 and all(r["null_loss"] > 0 for r in logs)
    record = json.loads((out / "erasure.json").read_text())
    assert f'"null_target": "{target}"' in json.dumps(record)


def test_a_bad_null_target_names_the_field():
    with pytest.raises(ConfigError, match="null_target"):
        erasekit.SalUnConfig(null_target="everything")
