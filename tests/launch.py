"""Running a Python command in one process, or under `accelerate launch` in two CPU processes (torchrun
with gloo), single-threaded and without the user's accelerate config, for the multi-process tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TWO_PROCESSES = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                 "--mixed_precision", "no", "--dynamo_backend", "no"]


def run_python(args: list[str], tmp_path: Path, processes: int = 1) -> subprocess.CompletedProcess:
    """`python ARGS` (one process) or `accelerate launch ARGS` (two); fails the test unless it exits 0."""
    assert processes in (1, 2)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_CONFIG_FILE": str(tmp_path / "none.yaml")}
    launcher = [] if processes == 1 else TWO_PROCESSES
    proc = subprocess.run([sys.executable, *launcher, *args], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
