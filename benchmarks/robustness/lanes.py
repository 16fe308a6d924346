"""The drivers' loop: run `erasekit ...` jobs a few at a time, each claimed by creating its log, so that
several drivers (on one machine or sharing a folder) never run the same job twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_in_lanes(jobs: Callable[[], list[tuple[str, list[str]]]], logs: Path, lanes: int,
                 ready: Callable[[list[str]], bool] = lambda cmd: True) -> None:
    """Run each (name, erasekit arguments) of `jobs()` whose `logs/NAME.log` does not exist yet, `lanes` at a
    time, single-threaded; `jobs()` is read again every round and a job waits until `ready(arguments)`
    (a model another driver is still building). Returns when nothing is left to start or running; stops
    with the failed jobs named when the jobs left all wait for models and one of this driver's jobs failed
    (the model they wait for may be one that will never be built)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list[tuple[subprocess.Popen, str, float]] = []
    failed: list[str] = []
    while True:
        todo = [(n, a) for n, a in jobs() if not (logs / f"{n}.log").exists()]
        if not todo and not running:
            return
        for name, cmd in [(n, a) for n, a in todo if ready(a)][: max(0, lanes - len(running))]:
            try:
                log = open(logs / f"{name}.log", "x")
            except FileExistsError:  # claimed by another driver meanwhile
                continue
            running.append((subprocess.Popen([sys.executable, "-m", "erasekit.cli", *cmd], cwd=ROOT, env=env,
                                             stdout=log, stderr=subprocess.STDOUT), name, time.time()))
        time.sleep(5)
        for item in list(running):
            proc, name, started = item
            if proc.poll() is not None:
                running.remove(item)
                print(f"{name}: exit {proc.returncode} in {time.time() - started:.0f} s", flush=True)
                if proc.returncode:
                    failed.append(name)
        if not running and todo and not any(ready(a) for _, a in todo):
            if failed:
                raise SystemExit(f"{len(todo)} job(s) wait for models, and {', '.join(failed)} failed (see "
                                 f"{logs}/NAME.log); fix it, delete its log, and run the driver again")
            time.sleep(30)  # waiting for another driver's models
