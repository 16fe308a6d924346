"""Erase step time and optimizer memory, measured side by side in one run.

For each model (the bundled digits UNet, and a ~100M-parameter UNet2DConditionModel built from
config with random weights), with the same batch, loss and SalUn mask (ratio 0.5):
- floor: a bare PyTorch step with no mask, AdamW over every parameter;
- reference: SalUn's published loop, `grad *= mask` on every parameter after backward, AdamW over all;
- erasekit: the shipped `EraseTrainer` step (fully unmasked tensors frozen, `grad *= mask` in place after
  backward, `MaskedAdamW` with state for the selected entries only);
- erasekit-nomask: the same trainer with no mask (the trainer's own floor).
The median of the timed steps is reported after warm-up steps; the variants run in `--rounds` interleaved
rounds (each round in a rotated order), so that a slow spell of the machine falls on all of them alike.
Optimizer state bytes are counted
from the optimizers' state tensors after the first step, plus `MaskedAdamW`'s flat mask indices; the bool
masks, which the reference loop and the trainer both hold, are counted in neither.

    python benchmarks/speed/bench_erase_step.py [--steps N] [--rounds R]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).parents[1] / "results"


def digits_model():
    from erasekit.pipelines.loading import load_pipeline

    unet = load_pipeline("bundled:digits-cfg").unet
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 16, 16, generator=g)
    labels = torch.randint(0, 10, (64,), generator=g)
    t = torch.randint(0, 1000, (64,), generator=g)
    return "digits-unet", unet, lambda m: m(x, t, class_labels=labels).sample, torch.randn(64, 1, 16, 16, generator=g)


def sd_like_model():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(112, 224, 448, 448), norm_num_groups=16, cross_attention_dim=768,
                                attention_head_dim=8, sample_size=32)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 32, 32, generator=g)
    ehs = torch.randn(2, 77, 768, generator=g)
    t = torch.randint(0, 1000, (2,), generator=g)
    return "unet2dcondition", unet, lambda m: m(x, t, encoder_hidden_states=ehs).sample, torch.randn(2, 4, 32, 32,
                                                                                                     generator=g)


def salun_mask(unet, forward, target):
    from erasekit.erase.saliency import compute_saliency_mask

    return compute_saliency_mask(unet, [0], lambda _: F.mse_loss(forward(unet), target), ratio=0.5)


def state_bytes(optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if isinstance(v, torch.Tensor) and v.dim() > 0)


def plain_loop(unet, forward, target, masks, steps: int, warmup: int) -> tuple[list[float], int]:
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5, weight_decay=0.0)
    named = dict(unet.named_parameters())
    times, state = [], 0
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = F.mse_loss(forward(unet), target)
        loss.backward()
        if masks is not None:
            for name, p in named.items():
                p.grad.mul_(masks[name])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i == 0:
            state = state_bytes(optimizer)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times, state


def trainer_loop(unet, forward, target, mask, steps: int, warmup: int) -> tuple[list[float], int]:
    from erasekit.erase.methods import Method
    from erasekit.erase.trainer import EraseTrainer, TrainConfig

    class Bench(Method):
        def __init__(self):
            self.mask = mask

        def compute_loss(self, denoiser, sampler):
            loss = F.mse_loss(forward(denoiser), target)
            return loss, {"loss": loss.item()}

    stamps = []
    with tempfile.TemporaryDirectory() as work:
        trainer = EraseTrainer(unet, Bench(), None, TrainConfig(learning_rate=1e-5, max_steps=warmup + steps,
                                                                max_grad_norm=0.0, log_every=10**9),
                               work, callbacks=[lambda tr, step, logs: stamps.append(time.perf_counter())])
        captured = {}
        from erasekit.erase.optim import MaskedAdamW

        original = MaskedAdamW.step

        def spy(self, *a, **k):
            out = original(self, *a, **k)
            indices = sum(i.numel() * i.element_size() for i in getattr(self, "indices", {}).values())
            captured.setdefault("bytes", state_bytes(self) + indices)  # the mask's flat indices count as state
            return out

        MaskedAdamW.step = spy
        try:
            trainer.train()
        finally:
            MaskedAdamW.step = original
    return [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:])], captured["bytes"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every variant")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for build in (digits_model, sd_like_model):
        name, unet, forward, target = build()
        params = sum(p.numel() for p in unet.parameters())
        mask = salun_mask(copy.deepcopy(unet), forward, target)
        dense = {n: m.to(torch.float32) for n, m in mask.masks.items()}
        variants = ["floor", "reference", "erasekit", "erasekit-nomask"]
        times: dict[str, list[float]] = {v: [] for v in variants}
        state: dict[str, int] = {}
        for round_ in range(args.rounds):  # interleaved rounds, each in a rotated order: drift hits all alike
            for variant in variants[round_ % 4:] + variants[:round_ % 4]:
                model = copy.deepcopy(unet).train()
                if variant in ("floor", "reference"):
                    got, state[variant] = plain_loop(model, forward, target, dense if variant == "reference" else None,
                                                     args.steps, args.warmup)
                else:
                    got, state[variant] = trainer_loop(model, forward, target, mask if variant == "erasekit" else None,
                                                       args.steps, args.warmup)
                times[variant] += got
        results = {}
        for variant in variants:
            results[variant] = {"median_step_s": round(statistics.median(times[variant]), 4),
                                "steps_timed": len(times[variant]), "adam_state_bytes": state[variant]}
            print(name, variant, results[variant], flush=True)
        floor = results["floor"]["median_step_s"]
        rows.append({
            "model": name, "params": params, "mask_ratio": 0.5, "selected": mask.selected, **results,
            "erasekit_over_floor": round(results["erasekit"]["median_step_s"] / floor, 3),
            "erasekit_over_trainer_nomask": round(results["erasekit"]["median_step_s"]
                                                  / results["erasekit-nomask"]["median_step_s"], 3),
            "reference_over_floor": round(results["reference"]["median_step_s"] / floor, 3),
            "adam_state_erasekit_over_all": round(results["erasekit"]["adam_state_bytes"]
                                                  / results["floor"]["adam_state_bytes"], 3),
        })
    out = {"date": time.strftime("%Y-%m-%d"), "machine": platform.node() or "vm", "device": "cpu",
           "threads": torch.get_num_threads(), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "erase-step-cpu.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
