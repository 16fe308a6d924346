"""Peak extra memory of the global top-k mask selection against concat-and-argsort.

Scores have the parameter shapes of a model built from config: `--model default` (the SD layout with
half the SD-1.5 widths, 220M), `100m` (a 110M UNet2DConditionModel), `digits` (the bundled digits
UNet, 0.64M) or `sd15` (SD-1.5 widths, 860M; also `--sd15`). Each method runs in a fresh subprocess;
on CPU the figure is the growth of peak RSS over the RSS after the scores exist, on CUDA it is
torch.cuda.max_memory_allocated over the scores' own bytes.

    python benchmarks/bench_mask_memory.py [--device cuda] [--model default|100m|digits|sd15]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def unet_shapes(model: str) -> dict[str, tuple[int, ...]]:
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        if model == "digits":
            from erasekit.pipelines.digits import build_digits_unet

            unet = build_digits_unet()
        else:
            channels = {"sd15": (320, 640, 1280, 1280), "default": (160, 320, 640, 640),
                        "100m": (112, 224, 448, 448)}[model]
            unet = UNet2DConditionModel(block_out_channels=channels, cross_attention_dim=768, attention_head_dim=8,
                                        norm_num_groups=16 if model == "100m" else 32)
    return {n: tuple(p.shape) for n, p in unet.named_parameters()}


def reference_select(scores, ratio):
    """What the issue forbids: concatenate everything and argsort."""
    import torch

    names = sorted(scores)
    flat = torch.cat([scores[n].flatten() for n in names])
    k = round(ratio * flat.numel())
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[torch.argsort(flat, descending=True, stable=True)[:k]] = True
    return dict(zip(names, (m.view(scores[n].shape) for n, m in zip(names, keep.split([scores[n].numel()
                                                                                        for n in names])))))


def worker(method: str, device: str, model: str, ratio: float) -> dict:
    import torch

    from erasekit.erase.saliency import select_top_ratio

    shapes = unet_shapes(model)
    g = torch.Generator(device).manual_seed(0)
    scores = {n: torch.rand(s, generator=g, device=device) for n, s in shapes.items()}
    n_params = sum(s.numel() for s in scores.values())
    score_bytes = sum(s.numel() * s.element_size() for s in scores.values())
    fn = select_top_ratio if method == "lean" else reference_select
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    masks = fn(scores, ratio)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds = time.perf_counter() - start
    selected = int(sum(int(m.sum()) for m in masks.values()))
    largest = max(s.numel() for s in scores.values())
    return {"method": method, "device": device, "params": n_params, "largest_tensor": largest,
            "score_bytes": score_bytes, "extra_peak_bytes": peak - base,
            "extra_bytes_per_param": (peak - base) / n_params, "selected": selected, "seconds": round(seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sd15", action="store_true", help="the same as --model sd15")
    parser.add_argument("--model", choices=["default", "100m", "digits", "sd15"], default="default")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--worker", choices=["lean", "reference"])
    args = parser.parse_args()
    model = "sd15" if args.sd15 else args.model
    if args.worker:
        print(json.dumps({"model": model, **worker(args.worker, args.device, model, args.ratio)}))
        return
    rows = []
    for method in ("lean", "reference"):
        cmd = [sys.executable, __file__, "--worker", method, "--device", args.device, "--ratio", str(args.ratio)]
        out = subprocess.run(cmd + ["--model", model], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{method:>9}: {r['params'] / 1e6:.1f}M params, extra peak {r['extra_peak_bytes'] / 2**20:.1f} MiB "
              f"({r['extra_bytes_per_param']:.2f} B/param), {r['seconds']} s, selected {r['selected']}")
    assert rows[0]["selected"] == rows[1]["selected"]
    RESULTS.mkdir(exist_ok=True)
    name = f"mask_memory-{args.device}{'' if model == 'default' else '-' + model}.json"
    (RESULTS / name).write_text(json.dumps({"machine": platform.node(), "cpu_count": __import__("os").cpu_count(),
                                            "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
