"""Peak extra memory of the global top-k mask selection against concat-and-argsort.

Scores have the parameter shapes of a UNet2DConditionModel built from config (SD layout, narrower
channels by default; --sd15 for the full SD-1.5 widths). Each method runs in a fresh subprocess;
on CPU the figure is the growth of peak RSS over the RSS after the scores exist, on CUDA it is
torch.cuda.max_memory_allocated over the scores' own bytes.

    python benchmarks/bench_mask_memory.py [--device cuda] [--sd15]
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


def unet_shapes(sd15: bool) -> dict[str, tuple[int, ...]]:
    import torch
    from diffusers import UNet2DConditionModel

    channels = (320, 640, 1280, 1280) if sd15 else (160, 320, 640, 640)
    with torch.device("meta"):
        unet = UNet2DConditionModel(block_out_channels=channels, cross_attention_dim=768, attention_head_dim=8)
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


def worker(method: str, device: str, sd15: bool, ratio: float) -> dict:
    import torch

    from erasekit.erase.saliency import select_top_ratio

    shapes = unet_shapes(sd15)
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
    parser.add_argument("--sd15", action="store_true")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--worker", choices=["lean", "reference"])
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.device, args.sd15, args.ratio)))
        return
    rows = []
    for method in ("lean", "reference"):
        cmd = [sys.executable, __file__, "--worker", method, "--device", args.device, "--ratio", str(args.ratio)]
        out = subprocess.run(cmd + (["--sd15"] if args.sd15 else []), capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{method:>9}: {r['params'] / 1e6:.1f}M params, extra peak {r['extra_peak_bytes'] / 2**20:.1f} MiB "
              f"({r['extra_bytes_per_param']:.2f} B/param), {r['seconds']} s, selected {r['selected']}")
    assert rows[0]["selected"] == rows[1]["selected"]
    RESULTS.mkdir(exist_ok=True)
    name = f"mask_memory-{args.device}{'-sd15' if args.sd15 else ''}.json"
    (RESULTS / name).write_text(json.dumps({"machine": platform.node(), "cpu_count": __import__("os").cpu_count(),
                                            "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
