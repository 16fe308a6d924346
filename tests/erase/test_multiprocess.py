import os
import subprocess
import sys
from pathlib import Path

import torch

from erasekit.erase.masks import load_mask

WORKER = Path(__file__).with_name("mask_worker.py")


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_CONFIG_FILE": str(tmp_path / "none.yaml")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_process_mask_equals_one_process_mask(tmp_path):
    """torchrun through `accelerate launch --multi_gpu` on a machine without GPUs: gloo on CPU. Each
    process scores half of the forget batches, then the float64 gradient sums are all-reduced."""
    _run([sys.executable, str(WORKER), str(tmp_path / "one.safetensors")], tmp_path)
    _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", str(WORKER), str(tmp_path / "two.safetensors")],
         tmp_path)
    one, two = load_mask(tmp_path / "one.safetensors"), load_mask(tmp_path / "two.safetensors")
    assert one.metadata["world"] == "1" and two.metadata["world"] == "2"
    assert one.masks.keys() == two.masks.keys()
    assert all(torch.equal(one.masks[n], two.masks[n]) for n in one.masks)
    assert one.selected == two.selected == round(0.3 * one.total)
