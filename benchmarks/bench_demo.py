"""Wall time and before/after metrics of `erasekit demo` on this machine.

    python benchmarks/bench_demo.py      # writes results/demo-cpu.json
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    out = Path("outputs/demo")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "erasekit.cli", "demo"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    metrics = json.loads((out / "erasure.json").read_text())["metrics"]
    row = {"date": time.strftime("%Y-%m-%d"), "machine": platform.node(), "cpu_count": os.cpu_count(),
           "demo_seconds": round(seconds, 1),
           "before": {k: metrics["before"][k] for k in ("UA", "RA", "FD", "noisy_rate_retain")},
           "after": {k: metrics["after"][k] for k in ("UA", "RA", "FD", "noisy_rate_retain")}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo-cpu.json").write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
