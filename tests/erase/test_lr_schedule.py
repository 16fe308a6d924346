"""The LR schedule counts optimizer steps, whatever the number of processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

CONFIG = Path(__file__).parents[2] / "configs" / "digits.yaml"
FLAGS = ["--max-steps", "6", "--lr-scheduler", "cosine", "--lr-warmup-steps", "2", "--log-every", "1",
         "--evaluate", "false", "--saliency-passes", "1", "--batch-size", "8", "--saliency-batch-size", "32"]


def _erase(launcher, out, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_CONFIG_FILE": str(tmp_path / "none.yaml")}
    cmd = [*launcher, "erase", "--config", str(CONFIG), "--output-dir", str(out), *FLAGS]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, [json.loads(line) for line in (out / "logs.jsonl").read_text().splitlines()]


def test_two_process_lr_at_step_k_equals_one_process_lr(tmp_path):
    out1, one = _erase([sys.executable, "-m", "erasekit.cli"], tmp_path / "one", tmp_path)
    out2, two = _erase([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
                        "erasekit.cli"], tmp_path / "two", tmp_path)
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 7))
    assert [r["lr"] for r in one] == [r["lr"] for r in two]
    assert one[0]["lr"] < one[1]["lr"] == 1e-4 > one[-1]["lr"]  # warm-up, then cosine decay
    assert "effective batch 8 = 1 process(es) x 8 x 1" in out1
    assert "effective batch 16 = 2 process(es) x 8 x 1" in out2
    record = json.loads((tmp_path / "two" / "erasure.json").read_text())
    assert record["effective_batch"] == {"processes": 2, "per_process": 8, "gradient_accumulation_steps": 1,
                                         "total": 16}
