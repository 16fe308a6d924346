"""The LR schedule counts optimizer steps, whatever the number of processes."""

import json
from pathlib import Path

from launch import run_python

CONFIG = Path(__file__).parents[2] / "configs" / "digits.yaml"
FLAGS = ["--max-steps", "6", "--lr-scheduler", "cosine", "--lr-warmup-steps", "2", "--log-every", "1",
         "--evaluate", "false", "--saliency-passes", "1", "--batch-size", "8", "--saliency-batch-size", "32"]


def _erase(processes, out, tmp_path):
    args = ["-m", "erasekit.cli", "erase", "--config", str(CONFIG), "--output-dir", str(out), *FLAGS]
    proc = run_python(args, tmp_path, processes)
    return proc.stdout, [json.loads(line) for line in (out / "logs.jsonl").read_text().splitlines()]


def test_two_process_lr_at_step_k_equals_one_process_lr(tmp_path):
    out1, one = _erase(1, tmp_path / "one", tmp_path)
    out2, two = _erase(2, tmp_path / "two", tmp_path)
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 7))
    assert [r["lr"] for r in one] == [r["lr"] for r in two]
    assert one[0]["lr"] < one[1]["lr"] == 1e-4 > one[-1]["lr"]  # warm-up, then cosine decay
    assert "effective batch 8 = 1 process(es) x 8 x 1" in out1
    assert "effective batch 16 = 2 process(es) x 8 x 1" in out2
    record = json.loads((tmp_path / "two" / "erasure.json").read_text())
    assert record["effective_batch"] == {"processes": 2, "per_process": 8, "gradient_accumulation_steps": 1,
                                         "total": 16}
