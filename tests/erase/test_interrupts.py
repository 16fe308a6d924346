"""Real SIGKILLs of `erasekit erase` in a subprocess, then the same command again: the run finishes
with the weights of an uninterrupted run (bitwise, CPU, same seed), and a staging directory with
nothing to resume is never a dead end."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONFIG = Path(__file__).parents[2] / "configs" / "digits.yaml"
SMALL = ["--forget", "8", "--max-steps", "6", "--saliency-passes", "2", "--batch-size", "16",
         "--saliency-batch-size", "32", "--evaluate", "false"]


def _command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "erasekit.cli", "erase", "--config", str(CONFIG), "--output-dir", str(out),
            *SMALL, *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _kill_when(cmd: list[str], ready, timeout: float = 300) -> None:
    """Start `cmd`, SIGKILL it as soon as `ready()` is true (or fail if it exits first)."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the kill point: {proc.stderr.read().decode()[-1500:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("kill point never reached")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _weights_fingerprint(out: Path) -> str:
    return json.loads((out / "erasure.json").read_text())["erased_fingerprint"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "out"
    subprocess.run(_command(out), env=_env(), check=True, capture_output=True, timeout=600)
    return _weights_fingerprint(out)


@pytest.mark.parametrize("again", [[], pytest.param(["--resume-from-checkpoint", "latest"], marks=pytest.mark.slow)],
                         ids=["same-command", "resume"])
def test_killed_before_the_first_checkpoint_reruns_to_the_same_weights(straight, tmp_path, again):
    out = tmp_path / "out"
    staging = tmp_path / ".out.erasekit-partial"
    _kill_when(_command(out), lambda: staging.is_dir())  # staging exists: saliency or training has begun
    assert staging.is_dir() and not out.exists()
    done = subprocess.run(_command(out, *again), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not staging.exists() and _weights_fingerprint(out) == straight


@pytest.mark.slow
@pytest.mark.parametrize("step", [2, 4])
def test_killed_after_a_checkpoint_resumes_to_the_same_weights(straight, tmp_path, step):
    out = tmp_path / "out"
    checkpoint = tmp_path / ".out.erasekit-partial" / "checkpoints" / f"checkpoint-{step}"
    _kill_when(_command(out, "--checkpointing-steps", "2"), lambda: checkpoint.is_dir())
    done = subprocess.run(_command(out, "--checkpointing-steps", "2", "--resume-from-checkpoint", "latest"),
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _weights_fingerprint(out) == straight
