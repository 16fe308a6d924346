"""Images per second of the digits-t2i evaluation's generation at batch sizes 1, 8 and 32.

Generation goes through the eval's own path (`generate_to_folder`: per-image generators, PNG plus
manifest). Each batch size generates the same 64 images of `bundled:digits-t2i` into a fresh folder.

    python benchmarks/bench_eval_throughput.py    # writes results/eval-throughput-<device>.json
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch

from erasekit.pipelines.generation import GenerationRecord, generate_to_folder
from erasekit.pipelines.loading import load_pipeline

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = load_pipeline("bundled:digits-t2i").to(device)
    records = [GenerationRecord(prompt=f"a handwritten digit {w}", seed=s, guidance=4.0, steps=30,
                                path=f"{w}-{s}.png") for w in ("three", "seven") for s in range(32)]
    generate_to_folder(pipe, records[:2], tempfile.mkdtemp(), 2, 16, 16)  # warm-up
    rows = []
    for batch in (1, 8, 32):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            generate_to_folder(pipe, records, folder, batch, 16, 16)
            seconds = time.perf_counter() - start
        rows.append({"batch_size": batch, "images": len(records), "seconds": round(seconds, 2),
                     "images_per_s": round(len(records) / seconds, 1)})
        print(rows[-1])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"eval-throughput-{device}.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "device": device, "cpu_count": os.cpu_count(), "steps": 30,
         "resolution": 16, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
