import pytest
import torch

from erasekit.erase.methods import SalUnConfig, SalUnMethod
from erasekit.erase.objectives import cfg_guided_loss
from erasekit.erase.saliency import SCOPES, parameters_in_scope, saliency_scores, select_top_ratio
from erasekit.errors import ConfigError


def brute_force_top_ratio(scores, ratio):
    """Reference: concatenate in sorted-name order and take a stable descending sort."""
    names = sorted(scores)
    flat = torch.cat([scores[n].flatten() for n in names])
    k = min(len(flat), max(1, round(ratio * len(flat))))
    keep = torch.zeros(len(flat), dtype=torch.bool)
    keep[torch.sort(flat, descending=True, stable=True).indices[:k]] = True
    out, start = {}, 0
    for n in names:
        out[n] = keep[start : start + scores[n].numel()].view(scores[n].shape)
        start += scores[n].numel()
    return out


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.33, 0.5, 0.9, 1.0])
def test_selection_matches_brute_force_including_ties(ratio):
    g = torch.Generator().manual_seed(1)
    scores = {f"layer{i}.weight": torch.rand(37 * (i + 1), generator=g) for i in range(6)}
    scores["layer2.weight"][::2] = 0.25  # many exact ties
    scores["layer4.weight"][:] = 0.0
    masks = select_top_ratio(scores, ratio)
    expected = brute_force_top_ratio(scores, ratio)
    assert all(torch.equal(masks[n], expected[n]) for n in scores)
    total = sum(s.numel() for s in scores.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(ratio * total)


def test_selection_handles_wide_dynamic_range():
    g = torch.Generator().manual_seed(2)
    scores = {"a": torch.rand(500, generator=g) * 1e-30, "b": torch.rand(500, generator=g) * 1e30,
              "c": torch.rand(500, generator=g)}
    masks = select_top_ratio(scores, 0.4)
    expected = brute_force_top_ratio(scores, 0.4)
    assert all(torch.equal(masks[n], expected[n]) for n in scores)


def test_selection_rejects_bad_ratio_and_scores():
    with pytest.raises(ConfigError, match="ratio"):
        select_top_ratio({"a": torch.ones(3)}, 0.0)
    with pytest.raises(ValueError, match="finite"):
        select_top_ratio({"a": torch.tensor([1.0, float("nan")])}, 0.5)


def _saliency_loss(unet, task, generator_seed):
    g = torch.Generator().manual_seed(generator_seed)

    def loss_fn(batch):
        noisy = task.noisy(batch.x0, g)
        predict = lambda z, t, c: task.predict(unet, z, t, c)  # noqa: E731
        return cfg_guided_loss(predict, noisy, batch.cond, task.null_cond(batch.cond), w=2.0)

    return loss_fn


def test_scores_equal_per_batch_gradient_reference(tiny_pipe, tiny_task):
    unet = tiny_pipe.unet
    batches = tiny_task.forget_batches(3, torch.Generator().manual_seed(0))
    params = parameters_in_scope(unet, "all")
    scores = saliency_scores(unet, params, batches, _saliency_loss(unet, tiny_task, 7))
    # Reference: gradients of each batch taken separately with autograd.grad, summed with sign, then |.|
    loss_fn = _saliency_loss(unet, tiny_task, 7)
    names = list(params)
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for batch in batches:
        grads = torch.autograd.grad(loss_fn(batch), [params[n] for n in names], allow_unused=True)
        for n, grad in zip(names, grads):
            if grad is not None:
                total[n] += grad
    for n in names:
        torch.testing.assert_close(scores[n], total[n].abs(), rtol=1e-5, atol=1e-8)
    assert all(p.grad is None for p in unet.parameters())


def test_mask_fraction_and_determinism(tiny_pipe, tiny_task):
    def mask(seed):
        method = SalUnMethod(SalUnConfig(ratio=0.3, saliency_batch_size=4, saliency_passes=2))
        method.prepare(tiny_pipe.unet, tiny_task, torch.Generator().manual_seed(seed))
        return method.mask

    a, b, c = mask(0), mask(0), mask(1)
    assert a.selected == round(0.3 * a.total)
    assert abs(a.fraction - 0.3) < 1 / a.total
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert any(not torch.equal(a.masks[n], c.masks[n]) for n in a.masks)
    assert all(m.dtype == torch.bool for m in a.masks.values())


def test_scope_presets_on_tiny_unet(tiny_pipe):
    unet = tiny_pipe.unet
    names = [n for n, _ in unet.named_parameters()]
    attn = parameters_in_scope(unet, "attn")
    assert attn and all(".attentions." in n and ".to_" in n for n in attn)
    no_norm = parameters_in_scope(unet, "no-norm")
    assert "norm" not in " ".join(no_norm) and len(no_norm) < len(names)
    assert len(parameters_in_scope(unet, "all")) == len(names)
    custom = parameters_in_scope(unet, r"^conv_in\.")
    assert set(custom) == {"conv_in.weight", "conv_in.bias"}
    with pytest.raises(ConfigError, match="matches no parameter"):
        parameters_in_scope(unet, "xattn")  # class-conditional UNets have no cross-attention
    with pytest.raises(ConfigError, match="valid regex"):
        parameters_in_scope(unet, "([")
    no_time = parameters_in_scope(unet, "no-time")
    assert not any("time_emb" in n for n in no_time)
    assert set(names) - set(no_time) == {n for n in names if n.startswith("time_embedding.") or ".time_emb_proj." in n}
    assert set(SCOPES) == {"all", "xattn", "no-xattn", "attn", "no-norm", "no-time"}
