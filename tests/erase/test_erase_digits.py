"""Real behaviour on the bundled digits model: erase a class, then judge generated samples."""

import json
from pathlib import Path

import torch

import erasekit
from erasekit.erase.masks import load_mask
from erasekit.pipelines import ClassConditionalPipeline
from erasekit.pipelines.delta import apply_delta_to_pipeline

CONFIG = Path(__file__).parents[2] / "configs" / "digits.yaml"


def test_erasing_digit_8_forgets_it_and_keeps_the_rest(tmp_path, assert_no_pickles):
    """The shipped recipe as it is (seed 0, 50 samples per class at eval_seed 1234) on digit 8, the class
    the first recipe left recognisable (UA 0.06). Targets of issue 8: UA >= 0.95, RA drop <= 3 points;
    retain FD is held to the base's within 15% (benchmarks/quality holds it to retraining's)."""
    out = tmp_path / "no-eight"
    result = erasekit.erase(CONFIG, forget=[8], output_dir=str(out), seed=0)
    before, after = result.metrics["before"], result.metrics["after"]
    assert before["UA"] <= 0.1  # the base model does draw eights
    assert after["UA"] >= 0.95
    assert after["RA"] >= before["RA"] - 0.03
    assert after["FD"] <= 1.15 * before["FD"]

    # The output directory is complete and records how it was made.
    pipe = erasekit.load_pipeline(out)
    assert isinstance(pipe, ClassConditionalPipeline)
    record = json.loads((out / "erasure.json").read_text())
    assert record["concept"]["forget_classes"] == [8] and record["method"] == "salun"
    assert record["concept"]["remap_classes"] == [0]  # remap: farthest, the kept class farthest from the 8s
    assert record["seed"] == 0 and record["config"]["method"]["ratio"] == 0.5
    assert record["config"]["method"]["retain_target"] == "teacher" and record["config"]["method"]["alpha"] == 10.0
    assert record["metrics"]["after"]["UA"] == after["UA"]
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["schema"] == "erasekit.eval/v1" and report["metrics"]["classes"]["model"]["UA"] == after["UA"]
    assert result.report_path == out / "report" / "report.md" and result.report_path.is_file()
    for name in ("report.md", "grid.png", "metrics.png"):
        assert (out / "report" / name).stat().st_size > 0
    assert not list(tmp_path.glob(".*partial*")) and not (out / "checkpoints").exists()

    # Weights outside the saved mask are bit-identical to the base.
    base_unet = erasekit.load_pipeline("bundled:digits-cfg").unet
    mask = load_mask(out / "mask.safetensors", base_unet)
    base = base_unet.state_dict()
    for name, param in pipe.unet.state_dict().items():
        m = mask.masks[name]
        assert torch.equal(param[~m], base[name][~m]), name
    assert abs(mask.fraction - 0.5) < 1e-6

    # The delta rebuilds the erased UNet from the base, bit for bit; the card is there.
    apply_delta_to_pipeline("bundled:digits-cfg", out / "erasure_delta.safetensors", tmp_path / "applied")
    rebuilt = erasekit.load_pipeline(tmp_path / "applied").unet.state_dict()
    assert all(torch.equal(rebuilt[n], t) for n, t in pipe.unet.state_dict().items())
    card = (out / "README.md").read_text()
    assert "- erasekit" in card and "- concept-erasure" in card and "classes [8]" in card

    # Every written file is safetensors, JSON, Markdown or PNG: nothing that a loader would unpickle.
    assert_no_pickles(out)
