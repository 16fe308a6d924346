"""Fisher saliency and mnemonic codes (erasekit.erase.fisher) against brute-force references on tiny models."""

import pytest
import torch

from erasekit.erase.fisher import (
    FisherSettings,
    concept_fisher,
    fisher_diagonal,
    fisher_ratio,
    fisher_scores,
    mnemonic_codes,
    side_inputs,
    stratified_levels,
)
from erasekit.erase.methods import Shard
from erasekit.errors import ConfigError


def per_sample_grads(model, x, y):
    """Brute force: one `torch.autograd.grad` per sample of a batched forward pass."""
    losses = ((model(x) - y) ** 2).sum(dim=1)
    params = list(model.parameters())
    return [torch.autograd.grad(losses[i], params, retain_graph=True) for i in range(len(x))]


def test_fisher_diagonal_is_the_mean_of_squared_per_sample_gradients():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    x, y = torch.randn(7, 5), torch.randn(7, 3)
    params = dict(model.named_parameters())
    fisher = fisher_diagonal(model, params, range(7), lambda i: ((model(x[i:i + 1]) - y[i:i + 1]) ** 2).sum())

    grads = per_sample_grads(model, x, y)
    for k, name in enumerate(params):
        expected = torch.stack([g[k] ** 2 for g in grads]).mean(0)
        assert torch.allclose(fisher[name], expected, rtol=1e-5, atol=1e-8), name
    # the mean of squares, not the square of the mean (SalUn's score): they differ here
    mean_sq = torch.stack([g[0] for g in grads]).mean(0) ** 2
    assert not torch.allclose(fisher["0.weight"], mean_sq)
    assert all(p.grad is None for p in model.parameters())  # no gradient left behind


def test_fisher_diagonal_over_shards_sums_to_the_whole():
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(9, 3), torch.randn(9, 2)
    params = dict(model.named_parameters())

    def loss(i):
        return ((model(x[i:i + 1]) - y[i:i + 1]) ** 2).sum()

    whole = fisher_diagonal(model, params, range(9), loss)
    # two "processes": each sums its share; `reduce` adds the other's share (an all-reduce of 2)
    shares = [fisher_diagonal(model, params, range(r, 9, 2), loss) for r in (0, 1)]
    counts = {0: 5.0, 1: 4.0}
    sums = {r: {n: v * counts[r] for n, v in s.items()} for r, s in enumerate(shares)}

    def reduce_for(rank):
        other = 1 - rank

        def reduce(t):
            if t.dim() == 0:
                return t + counts[other]
            name = next(n for n, v in sums[rank].items() if v.shape == t.shape and torch.allclose(v, t))
            return t + sums[other][name]
        return reduce

    reduced = fisher_diagonal(model, params, range(0, 9, 2), loss, reduce_for(0))
    for name in params:
        assert torch.allclose(reduced[name], whole[name], rtol=1e-5), name


def test_fisher_diagonal_needs_a_sample():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="at least one sample"):
        fisher_diagonal(model, dict(model.named_parameters()), [], lambda i: model(i).sum())


def test_fisher_ratio_divides_by_the_retain_fisher_plus_a_relative_floor():
    forget = {"a": torch.tensor([1.0, 2.0, 0.0]), "b": torch.tensor([[4.0]])}
    retain = {"a": torch.tensor([1.0, 0.0, 3.0]), "b": torch.tensor([[4.0]])}
    floor = 0.5 * (1 + 0 + 3 + 4) / 4  # delta times the mean retain Fisher over all 4 weights
    out = fisher_ratio({k: v.clone() for k, v in forget.items()}, retain, 0.5)
    assert torch.allclose(out["a"], torch.tensor([1 / (1 + floor), 2 / floor, 0.0]))
    assert torch.allclose(out["b"], torch.tensor([[4 / (4 + floor)]]))
    with pytest.raises(ValueError, match="not all zero"):
        fisher_ratio(forget, {k: torch.zeros_like(v) for k, v in retain.items()}, 0.5)


def test_mnemonic_codes_are_fixed_per_condition_and_seed():
    codes, ids = mnemonic_codes((1, 4, 4), [3, 7], 5, seed=2)
    assert codes.shape == (10, 1, 4, 4) and ids.tolist() == [3] * 5 + [7] * 5
    alone, _ = mnemonic_codes((1, 4, 4), [7], 5, seed=2)
    assert torch.equal(alone, codes[5:])  # class 7's codes do not depend on which classes are beside it
    again, _ = mnemonic_codes((1, 4, 4), [3, 7], 5, seed=2)
    assert torch.equal(again, codes)
    other, _ = mnemonic_codes((1, 4, 4), [3, 7], 5, seed=3)
    assert not torch.allclose(other, codes)  # another seed: held-out codes
    assert abs(float(mnemonic_codes((1, 16, 16), [0], 64, 0)[0].std()) - 1) < 0.05  # standard normal


def test_stratified_levels_put_one_level_in_each_stratum(tiny_pipe):
    levels = stratified_levels(4)
    assert levels.tolist() == [0.125, 0.375, 0.625, 0.875]
    from erasekit.pipelines.adapters import adapter_for

    adapter = adapter_for(tiny_pipe)
    scheduler = adapter.training_scheduler()
    noisy = adapter.noise_and_target(scheduler, torch.zeros(4, 1, 8, 8), torch.Generator().manual_seed(0), levels)
    steps = scheduler.config.num_train_timesteps
    assert noisy.t.tolist() == [int(v * steps) for v in levels.tolist()]


@pytest.mark.parametrize("null_weight", [0.0, 0.5])
def test_concept_fisher_matches_a_batched_brute_force(tiny_pipe, tiny_task, null_weight):
    """Per-sample gradients of one batched forward pass, with the noise and timesteps rebuilt by hand; with a
    `null_weight`, the null branch's loss on the same noised sample is added."""
    unet = tiny_pipe.unet
    params = {n: p for n, p in unet.named_parameters() if "conv_out" in n or "class_embedding" in n}
    x, c = tiny_task.forget_x[:5], tiny_task.forget_c[:5]
    fisher = concept_fisher(unet, tiny_task, params, x, c, seed=11, null_weight=null_weight)

    scheduler = tiny_task.scheduler
    steps = scheduler.config.num_train_timesteps
    noise = torch.cat([torch.randn((1, *x.shape[1:]), generator=torch.Generator().manual_seed(11 + i))
                       for i in range(5)])
    t = torch.tensor([int((i + 0.5) / 5 * steps) for i in range(5)])
    z = scheduler.add_noise(x, noise, t)
    assert scheduler.config.prediction_type == "v_prediction"  # as the bundled digits model
    target = scheduler.get_velocity(x, noise, t)
    per_sample = ((unet(z, t, class_labels=c).sample - target) ** 2).flatten(1).mean(1)
    null = torch.full_like(c, tiny_task.null)
    per_sample = per_sample + null_weight * ((unet(z, t, class_labels=null).sample - target) ** 2).flatten(1).mean(1)
    for name, p in params.items():
        grads = torch.stack([torch.autograd.grad(per_sample[i], p, retain_graph=True)[0] for i in range(5)])
        expected = (grads ** 2).mean(0)
        assert expected.max() > 0
        assert torch.allclose(fisher[name], expected, rtol=1e-3, atol=1e-6 * float(expected.max())), name


def test_concept_fisher_is_the_same_over_two_shards(tiny_pipe, tiny_task):
    unet = tiny_pipe.unet
    params = {n: p for n, p in unet.named_parameters() if "conv_out" in n}
    x, c = tiny_task.forget_x[:6], tiny_task.forget_c[:6]
    whole = concept_fisher(unet, tiny_task, params, x, c, seed=3)
    # rank 1 of 2 with a reduce that adds rank 0's sums and count (computed by a rank-0 call first)
    rank0 = concept_fisher(unet, tiny_task, params, x, c, seed=3, shard=Shard(0, 2, None))
    n0 = 3  # samples 0, 2, 4

    def reduce(t):
        if t.dim() == 0:
            return t + n0
        return t + rank0["conv_out.weight" if t.dim() == 4 else "conv_out.bias"] * n0

    rank1 = concept_fisher(unet, tiny_task, params, x, c, seed=3, shard=Shard(1, 2, reduce))
    for name in params:
        assert torch.allclose(rank1[name], whole[name], rtol=1e-5), name


def test_fisher_scores_normalise_by_the_retain_side(tiny_pipe, tiny_task):
    unet = tiny_pipe.unet
    params = {n: p for n, p in unet.named_parameters() if "conv_out" in n}
    settings = FisherSettings(fisher_samples=4, fisher_normalize=False)
    plain = fisher_scores(unet, tiny_task, params, settings, "data", seed=5)
    ratio = fisher_scores(unet, tiny_task, params, FisherSettings(fisher_samples=4, fisher_delta=0.1), "data", seed=5)
    retain = side_inputs(tiny_task, "retain", "data", 4, 6)
    from erasekit.erase.fisher import CODE_SEED_STRIDE

    f_r = concept_fisher(unet, tiny_task, params, *retain, 5 * CODE_SEED_STRIDE)
    expected = fisher_ratio({k: v.clone() for k, v in plain.items()}, f_r, 0.1)
    for name in params:
        assert torch.allclose(ratio[name], expected[name], rtol=1e-5), name


def test_side_inputs_codes_carry_the_sides_conditions(tiny_task):
    x, c = side_inputs(tiny_task, "forget", "codes", 5, seed=0)
    assert x.shape == (5, 1, 8, 8) and set(c.tolist()) == {1}
    x, c = side_inputs(tiny_task, "retain", "codes", 5, seed=0)
    assert x.shape == (6, 1, 8, 8) and sorted(set(c.tolist())) == [0, 2, 3]  # ceil(5 / 3) codes per kept class
    x, c = side_inputs(tiny_task, "forget", "data", 4, seed=0)
    assert x.shape == (4, 1, 8, 8) and set(c.tolist()) == {1}
    assert torch.equal(x, side_inputs(tiny_task, "forget", "data", 4, seed=0)[0])  # a seeded order


@pytest.mark.parametrize("field,value", [("fisher_samples", 0), ("fisher_samples", 2.5), ("fisher_delta", 0.0)])
def test_fisher_settings_reject_bad_values(field, value):
    with pytest.raises(ConfigError, match=field):
        FisherSettings(**{field: value})
