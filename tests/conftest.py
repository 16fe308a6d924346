import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from erasekit.erase.tasks import ClassConditionalTask
from tiny import tiny_class_conditional_pipeline


@pytest.fixture
def tiny_pipe():
    return tiny_class_conditional_pipeline(num_classes=4, sample_size=8)


@pytest.fixture
def tiny_task(tiny_pipe):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 8, 8, generator=g) * 2 - 1
    labels = torch.arange(40) % 4
    return ClassConditionalTask.for_pipeline(tiny_pipe, images, labels, forget=[1])


@pytest.fixture(scope="session")
def tiny_clip_name(tmp_path_factory):
    """Registers a 16-dimensional open_clip architecture (random weights) and returns its name."""
    import json

    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    (folder / "erasekit-tiny-clip.json").write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(folder)
    return "erasekit-tiny-clip"


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps a process-wide singleton; each test builds its own Accelerator."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


SAFE_SUFFIXES = {".safetensors", ".json", ".jsonl", ".md", ".png", ".txt", ".npy"}


@pytest.fixture
def assert_no_pickles():
    """Checks that every file under a folder is safetensors, JSON, Markdown, PNG, text or a plain `.npy`
    array (loadable with allow_pickle=False), and that none starts like a pickle (protocol 2+) or a
    torch.save zip."""
    def check(folder):
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert files, f"nothing under {folder}"
        for path in files:
            assert path.suffix in SAFE_SUFFIXES, path
            head = path.read_bytes()[:2]
            assert head[:1] != b"\x80" and head != b"PK", path
            if path.suffix == ".npy":
                np.load(path, allow_pickle=False)  # raises on an object (pickled) array
    return check


class ErasekitProcess:
    """`erasekit` in a child process with one thread: run to the end, run under tests/kill_worker.py to
    die by SIGKILL at a named point, or SIGKILL from outside after a delay."""

    worker = Path(__file__).parent / "kill_worker.py"

    @staticmethod
    def env() -> dict:
        return {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(self, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "erasekit.cli", *args], env=self.env(), capture_output=True,
                              text=True, timeout=600)

    def timed(self, args: list[str]) -> float:
        """Run to the end, which must succeed; the wall time in seconds."""
        started = time.time()
        done = self.run(args)
        assert done.returncode == 0, done.stderr[-2000:]
        return time.time() - started

    def kill_at(self, target: str, n: int, when: str, match: str, args: list[str]) -> None:
        done = subprocess.run([sys.executable, str(self.worker), target, str(n), when, match, "--", *args],
                              env=self.env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == -signal.SIGKILL, f"exit {done.returncode}: {done.stderr[-2000:]}"

    def kill_after(self, seconds: float, args: list[str]) -> None:
        """SIGKILL after `seconds` unless the command ended first."""
        proc = subprocess.Popen([sys.executable, "-m", "erasekit.cli", *args], env=self.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


@pytest.fixture
def no_deprecations():
    """Fails the test on a deprecation that erasekit's own calls cause: a DeprecationWarning or FutureWarning
    raised from erasekit's modules, one whose message says an argument or API is deprecated (diffusers'
    and transformers' helpers for what a caller passed), or such a line logged by those libraries. Other
    libraries' internal deprecations (numpy's `__array__` inside a scheduler) are theirs, not erasekit's."""
    import logging
    import warnings

    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            if "deprecat" in record.getMessage().lower():
                lines.append(f"{record.name}: {record.getMessage()[:200]}")

    handler = Collect()
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers", "huggingface_hub", "accelerate")]
    once = getattr(logging.Logger, "warning_once", None)  # transformers logs some deprecations once a process
    if once is not None and hasattr(once, "cache_clear"):
        once.cache_clear()
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, FutureWarning)) and (
                "/erasekit/" in w.filename or "deprecat" in str(w.message).lower()):
            lines.append(f"{w.category.__name__} at {w.filename}:{w.lineno}: {str(w.message)[:200]}")
    assert not lines, "deprecations:\n" + "\n".join(lines)


@pytest.fixture(scope="session")
def erasekit_process():
    return ErasekitProcess()
