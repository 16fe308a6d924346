from pathlib import Path

import torch

from erasekit.erase.masks import load_mask
from launch import run_python

WORKER = Path(__file__).with_name("mask_worker.py")


def test_two_process_mask_equals_one_process_mask(tmp_path):
    """torchrun through `accelerate launch --multi_gpu` on a machine without GPUs: gloo on CPU. Each
    process scores half of the forget batches, then the float64 gradient sums are all-reduced."""
    run_python([str(WORKER), str(tmp_path / "one.safetensors")], tmp_path)
    run_python([str(WORKER), str(tmp_path / "two.safetensors")], tmp_path, processes=2)
    one, two = load_mask(tmp_path / "one.safetensors"), load_mask(tmp_path / "two.safetensors")
    assert one.metadata["world"] == "1" and two.metadata["world"] == "2"
    assert one.masks.keys() == two.masks.keys()
    assert all(torch.equal(one.masks[n], two.masks[n]) for n in one.masks)
    assert one.selected == two.selected == round(0.3 * one.total)
