"""Progress fits where it runs: a bar on a terminal, one-line records in a log file, nothing off the main
process; `erasekit erase > log 2>&1` writes no carriage-return frames and shows every long loop."""

import logging
import os
import subprocess
import sys

import pytest

from erasekit.progress import Progress

CONFIG = "configs/digits.yaml"


@pytest.fixture
def log_mode(monkeypatch):
    monkeypatch.setenv("ERASEKIT_PROGRESS", "log")
    monkeypatch.setenv("ERASEKIT_PROGRESS_INTERVAL", "0")
    monkeypatch.delenv("RANK", raising=False)


def test_log_records_carry_count_loss_rate_and_eta(log_mode, caplog):
    with caplog.at_level(logging.INFO, logger="erasekit.progress"), Progress(4, "train", unit="step") as progress:
        for loss in (0.5, 0.25, 0.125, 0.0625):
            progress.update(1, loss=loss)
    lines = [r.getMessage() for r in caplog.records]
    # one record per update (interval 0); the end adds none, as the last update was just logged
    assert len(lines) == 4
    assert lines[1].startswith("train: 2/4 step (50%), loss 0.25, ")
    assert "step/s" in lines[1] or "s/step" in lines[1]
    assert "ETA " in lines[1] and "done in " in lines[-1] and "loss 0.0625" in lines[-1]


def test_records_wait_for_the_interval(monkeypatch, caplog):
    monkeypatch.setenv("ERASEKIT_PROGRESS", "log")
    monkeypatch.setenv("ERASEKIT_PROGRESS_INTERVAL", "3600")
    with caplog.at_level(logging.INFO, logger="erasekit.progress"):
        for _ in Progress.wrap(list(range(50)), "score prompts", unit="prompt"):
            pass
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["score prompts: 50/50 prompt (100%)"]


def test_other_processes_and_off_mode_are_silent(log_mode, monkeypatch, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="erasekit.progress"):
        with Progress(3, "a", enabled=False) as progress:
            progress.update(3)
        monkeypatch.setenv("RANK", "1")
        with Progress(3, "b") as progress:
            progress.update(3)
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("ERASEKIT_PROGRESS", "off")
        with Progress(3, "c") as progress:
            progress.update(3)
    assert not caplog.records and not capsys.readouterr().err


def test_a_terminal_gets_a_bar_on_stderr(monkeypatch, capsys):
    monkeypatch.setenv("ERASEKIT_PROGRESS", "bar")
    monkeypatch.delenv("RANK", raising=False)
    with Progress(3, "train") as progress:
        progress.update(3, loss=0.5)
    assert "train" in capsys.readouterr().err


def test_an_erase_logged_to_a_file_has_progress_lines_and_no_carriage_returns(tmp_path):
    log = tmp_path / "log"
    with open(log, "w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "erasekit.cli", "erase", "--config", CONFIG, "--forget", "3",
             "--output-dir", str(tmp_path / "o"), "--max-steps", "6", "--batch-size", "8", "--data", "generated",
             "--data-samples-per-class", "2", "--samples-per-class", "2", "--num-inference-steps", "3"],
            stdout=out, stderr=subprocess.STDOUT, timeout=600, env={**_env(), "ERASEKIT_PROGRESS_INTERVAL": "0"})
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "\r" not in text
    lines = text.splitlines()
    for loop in ("generate class data: ", "gradients: ", "train: ", "evaluate: generate base: ",
                 "evaluate: generate model: ", "evaluate: score model: "):
        assert any(line.startswith(loop) for line in lines), loop
    assert any(line.startswith("train: 6/6 step (100%), loss ") and "done in" in line for line in lines)


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("ERASEKIT_PROGRESS", "RANK", "CI")}
