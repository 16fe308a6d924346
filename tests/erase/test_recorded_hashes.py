"""Refactors change no behaviour: small digits erases by salun, esd and oneshot give bitwise the mask,
weights, delta and report metrics recorded in benchmarks/results/method-hashes-cpu.json, and uce on
digits-t2i its weights and delta (recorded at 59b6770, before RECE's rounds were added to it).

Float results depend on the CPU (two Xeons that both report AVX512 gave other weights), so the hashes are
recorded per machine: the capability torch reports, the CPU's model and flags, the thread count and torch's
version. On a machine with no record the comparison cannot hold and the test says so rather than passing.
Record a new machine at a commit whose weights are the reference (a worktree of it), or re-record after a
change meant to move the weights, with `ERASEKIT_RECORD_HASHES=1 pytest tests/erase/test_recorded_hashes.py`.
"""

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

import erasekit

ROOT = Path(__file__).parents[2]
RECORD = ROOT / "benchmarks" / "results" / "method-hashes-cpu.json"
SAMPLING = dict(samples_per_class=4, num_inference_steps=5, seed=7)
RUNS = {
    "salun": ("configs/digits.yaml", dict(forget=[8], max_steps=4, saliency_passes=1)),
    "esd": ("configs/digits.yaml", dict(method="esd", scope="all", forget=[8], max_steps=4)),
    "oneshot": ("configs/digits-oneshot.yaml", dict(forget=[8], fisher_samples=8, factors=[0.0, -1.0],
                                                      check_samples=4, check_steps=4, check_levels=2)),
}
TEXT_RUNS = {"uce": ("configs/digits-t2i.yaml", dict(method="uce", evaluate=False))}  # closed form: no sampling


def _digest(path: Path) -> str:
    """The tensors of a safetensors file (names, dtypes, shapes, bytes), not its metadata."""
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, tensor in sorted(load_file(path).items()):
        h.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
        h.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def hashes(out: Path) -> dict:
    found = {"unet": _digest(out / "unet" / "diffusion_pytorch_model.safetensors"),
             "delta": _digest(out / "erasure_delta.safetensors")}
    if (out / "report" / "report.json").is_file():
        report = json.loads((out / "report" / "report.json").read_text())
        found["report_metrics"] = hashlib.sha256(json.dumps(report["metrics"], sort_keys=True).encode()).hexdigest()[:16]
    if (out / "mask.safetensors").is_file():
        found["mask"] = _digest(out / "mask.safetensors")
    return found


def cpu_identity() -> str:
    """The CPU's model name and a digest of its feature flags, from /proc/cpuinfo ('unknown' elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = hashlib.sha256(" ".join(sorted(fields.get("flags", "").split())).encode()).hexdigest()[:12]
    return f"{fields.get('model name', 'unknown')} (flags {flags})"


def machine() -> dict:
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu_identity(),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


@pytest.mark.parametrize("method", sorted(RUNS) + sorted(TEXT_RUNS))
def test_digits_erase_gives_the_recorded_hashes(method, tmp_path):
    recipe, overrides = RUNS[method] if method in RUNS else TEXT_RUNS[method]
    overrides = {**overrides, **SAMPLING} if method in RUNS else overrides
    erasekit.erase(ROOT / recipe, output_dir=str(tmp_path / method), **overrides)
    found = hashes(tmp_path / method)
    records = json.loads(RECORD.read_text())["machines"] if RECORD.is_file() else []
    here = next((r for r in records if r["machine"] == machine()), None)
    if os.environ.get("ERASEKIT_RECORD_HASHES"):
        if here is None:
            here = {"machine": machine(), "runs": {}}
            records.append(here)
        here["runs"][method] = {"recipe": recipe, "overrides": overrides, "hashes": found}
        RECORD.write_text(json.dumps({"machines": records}, indent=2) + "\n")
    if here is None or method not in here["runs"]:
        pytest.skip(f"no hashes were recorded on this machine ({machine()}): float results differ between CPUs")
    assert here["runs"][method]["overrides"] == overrides
    assert found == here["runs"][method]["hashes"]


def test_config_objects_give_the_weights_of_the_equivalent_recipe(tmp_path):
    """`erasekit.erase(SalUnConfig(...), run=..., train=..., data=..., eval=...)` spells out the salun run's
    recipe and overrides as objects; both routes write bitwise the same mask, weights, delta and report."""
    recipe, overrides = RUNS["salun"]
    erasekit.erase(ROOT / recipe, output_dir=str(tmp_path / "yaml"), **overrides, **SAMPLING)
    erasekit.erase(
        erasekit.SalUnConfig(ratio=0.5, scope="all", saliency_guidance=2.0, saliency_batch_size=64, saliency_passes=1,
                             remap="farthest", retain_target="teacher", alpha=10.0, batch_size=64, label_dropout=0.1),
        run=erasekit.EraseConfig(pretrained_model_name_or_path="bundled:digits-cfg", output_dir=str(tmp_path / "objects")),
        train=erasekit.TrainConfig(seed=7, learning_rate=1e-4, max_steps=4, ema_decay=0.99, mixed_precision="no",
                                   max_grad_norm=1.0),
        data=erasekit.ClassDataConfig(forget=[8]),
        eval=erasekit.Sampling(samples_per_class=4, num_inference_steps=5, guidance_scale=3.0, eval_seed=1234),
    )
    yaml_run, object_run = hashes(tmp_path / "yaml"), hashes(tmp_path / "objects")
    assert set(yaml_run) == {"unet", "delta", "report_metrics", "mask"}
    assert object_run == yaml_run
    record = json.loads((tmp_path / "objects" / "erasure.json").read_text())
    assert record["method"] == "salun" and record["config"]["train"]["max_steps"] == 4
