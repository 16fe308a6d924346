"""The same config and seed twice: the same mask, the same weights and the same report, on CPU.

The hashes of one run are recorded in benchmarks/results/determinism-cpu.json (with the machine), so a
change that moves them shows in review; the test itself compares the two runs of this machine, since
float results may differ between CPU types.
"""

import hashlib
import json
from pathlib import Path

import torch

import erasekit

CONFIG = Path(__file__).parents[2] / "configs" / "digits.yaml"
SMALL = dict(forget=[8], max_steps=4, saliency_passes=1, samples_per_class=4, num_inference_steps=5, seed=7)


def _hashes(out: Path) -> dict:
    def digest(path: Path) -> str:
        """The tensors of a safetensors file (names, dtypes, shapes, bytes); metadata such as the run's
        own output path is not part of the weights."""
        from safetensors.torch import load_file

        h = hashlib.sha256()
        for name, tensor in sorted(load_file(path).items()):
            h.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
            h.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    report = json.loads((out / "report" / "report.json").read_text())
    return {"mask": digest(out / "mask.safetensors"), "unet": digest(out / "unet" / "diffusion_pytorch_model.safetensors"),
            "delta": digest(out / "erasure_delta.safetensors"),
            "report_metrics": hashlib.sha256(json.dumps(report["metrics"], sort_keys=True).encode()).hexdigest()[:16]}


def test_same_config_and_seed_give_the_same_mask_weights_and_report(tmp_path):
    runs = []
    for name in ("a", "b"):
        erasekit.erase(CONFIG, output_dir=str(tmp_path / name), **SMALL)
        runs.append(_hashes(tmp_path / name))
    assert runs[0] == runs[1]
    record = Path(__file__).parents[2] / "benchmarks" / "results" / "determinism-cpu.json"
    recorded = json.loads(record.read_text())
    assert recorded["config"] == {"file": "configs/digits.yaml", **SMALL}
    assert set(recorded["hashes"]) == set(runs[0])
    print("hashes:", runs[0], "recorded:", recorded["hashes"])
