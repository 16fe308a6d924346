"""MaskedAdamW: torch's AdamW on the selected entries, nothing outside them, state only for them."""

import copy

import pytest
import torch

from erasekit.erase.optim import MaskedAdamW


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(6, 5, generator=g), torch.randn(7, generator=g), torch.randn(3, 3, generator=g)]
    masks = [torch.rand(6, 5, generator=g) < 0.4, torch.rand(7, generator=g) < 0.6, None]
    grads = [[torch.randn(w.shape, generator=g) for w in weights] for _ in range(5)]
    return weights, masks, grads


@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_selected_entries_follow_torch_adamw_and_the_rest_never_change(decay):
    weights, masks, grads = _problem()
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    ours = MaskedAdamW(params, masks, lr=0.05, weight_decay=decay)
    # the reference: torch's AdamW on parameters made of the selected entries alone
    refs = [torch.nn.Parameter(w[m].clone() if m is not None else w.clone()) for w, m in zip(weights, masks)]
    theirs = torch.optim.AdamW(refs, lr=0.05, weight_decay=decay, foreach=False)
    for step in grads:
        for p, r, m, gr in zip(params, refs, masks, step):
            p.grad = gr.clone()
            r.grad = gr[m].clone() if m is not None else gr.clone()
        ours.step()
        theirs.step()
    for p, r, w, m in zip(params, refs, weights, masks):
        inside = p.detach()[m] if m is not None else p.detach()
        torch.testing.assert_close(inside, r.detach(), rtol=1e-6, atol=1e-7)
        if m is not None:
            assert torch.equal(p.detach()[~m], w[~m])  # bit-identical outside the mask
            assert not torch.equal(inside, w[m])


def test_state_holds_one_value_per_selected_entry():
    weights, masks, grads = _problem()
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = MaskedAdamW(params, masks, lr=0.01)
    for p, gr in zip(params, grads[0]):
        p.grad = gr
    opt.step()
    for p, m in zip(params, masks):
        selected = int(m.sum()) if m is not None else p.numel()
        assert opt.state[p]["exp_avg"].numel() == opt.state[p]["exp_avg_sq"].numel() == selected


def test_a_saved_and_reloaded_optimizer_continues_bitwise():
    weights, masks, grads = _problem(1)
    straight = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = MaskedAdamW(straight, masks, lr=0.02, weight_decay=0.01)
    for i, step in enumerate(grads):
        for p, gr in zip(straight, step):
            p.grad = gr.clone()
        opt.step()
        if i == 1:
            saved = (copy.deepcopy([p.detach().clone() for p in straight]), copy.deepcopy(opt.state_dict()))
    resumed = [torch.nn.Parameter(w) for w in saved[0]]
    again = MaskedAdamW(resumed, masks, lr=0.02, weight_decay=0.01)
    again.load_state_dict(saved[1])
    for step in grads[2:]:
        for p, gr in zip(resumed, step):
            p.grad = gr.clone()
        again.step()
    for a, b in zip(straight, resumed):
        assert torch.equal(a.detach(), b.detach())


def test_a_mask_of_the_wrong_shape_or_dtype_is_refused():
    p = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="shaped like"):
        MaskedAdamW([p], [torch.ones(2, 3, dtype=torch.bool)])
    with pytest.raises(ValueError, match="bool"):
        MaskedAdamW([p], [torch.ones(3, 2)])
    with pytest.raises(ValueError, match="masks"):
        MaskedAdamW([p], [])


def test_updating_in_buckets_changes_nothing(monkeypatch):
    """Parameters are updated in buckets of at most BUCKET_ENTRIES gathered entries; a bucket per
    parameter gives the same bits as one bucket for all."""
    import sys

    optim = sys.modules[MaskedAdamW.__module__]
    results = []
    for bucket in (optim.BUCKET_ENTRIES, 1):
        monkeypatch.setattr(optim, "BUCKET_ENTRIES", bucket)
        weights, masks, grads = _problem(2)
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        opt = MaskedAdamW(params, masks, lr=0.03, weight_decay=0.1)
        for step in grads:
            for p, gr in zip(params, step):
                p.grad = gr.clone()
            opt.step()
        results.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*results))
    assert not all(torch.equal(a, w) for a, w in zip(results[0], _problem(2)[0]))


def test_a_parameter_without_a_gradient_is_skipped_as_torch_adamw_skips_it():
    """Steps where a parameter has no gradient leave it and its step count alone (the per-parameter
    path); once every parameter has one again, the packed path carries on from the same moments."""
    weights, masks, grads = _problem(3)
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    ours = MaskedAdamW(params, masks, lr=0.05, weight_decay=0.1)
    refs = [torch.nn.Parameter(w[m].clone() if m is not None else w.clone()) for w, m in zip(weights, masks)]
    theirs = torch.optim.AdamW(refs, lr=0.05, weight_decay=0.1, foreach=False)
    missing = {0: {1}, 1: set(), 2: {0, 2}, 3: set(), 4: set()}  # step -> parameters without a gradient
    for i, step in enumerate(grads):
        for j, (p, r, m, gr) in enumerate(zip(params, refs, masks, step)):
            p.grad = None if j in missing[i] else gr.clone()
            r.grad = None if j in missing[i] else (gr[m].clone() if m is not None else gr.clone())
        ours.step()
        theirs.step()
    for p, r, m in zip(params, refs, masks):
        torch.testing.assert_close(p.detach()[m] if m is not None else p.detach(), r.detach(), rtol=1e-6, atol=1e-7)
        assert ours.state[p]["step"].item() == theirs.state[r]["step"].item()
