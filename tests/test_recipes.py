"""Every shipped recipe runs, with only the model path and sizes overridden, on replicas of real checkpoints.

The replicas (erasekit.pipelines.replicas) have every part the real checkpoints have, the SD 1.x safety
checker included, rigged here to black out every image it sees: a generation path that leaves it on
fails these tests. Each recipe keeps its own mixed precision, gradient checkpointing and checkpointing.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from erasekit.cli import main
from erasekit.config import load_yaml
from erasekit.pipelines.replicas import build_replica

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
# recipe file -> replica it runs on, and the weights variant of the base
SD_RUNS = [
    ("sd-nudity.yaml", "sd14", None),
    ("sd-nudity.yaml", "sd14", "fp16"),
    ("sd-object.yaml", "sd15", None),
    ("sd21-nudity.yaml", "sd21", None),
    ("sdxl-nudity.yaml", "sdxl", None),
    ("sd3-nudity.yaml", "sd3", None),
    # bf16 autocast over FLUX's 512-token T5 sequence is slow on CPU (about 2.5 minutes): `make test-all`.
    # tests/erase/test_erase_text.py runs tiny FLUX end to end in the default suite.
    pytest.param("flux-nudity.yaml", "flux", None, marks=pytest.mark.slow),
]
# Every file under configs/ and the test module that runs it (test_every_config_file_is_run checks this).
RUN_BY = {
    **{(run.values if hasattr(run, "values") else run)[0]: "tests/test_recipes.py" for run in SD_RUNS},
    "digits.yaml": "tests/erase/test_erase_digits.py",
    "digits-t2i.yaml": "tests/erase/test_digits_t2i.py",
    "digits-retrain.yaml": "tests/erase/test_baselines.py",
    "digits-oneshot.yaml": "tests/erase/test_oneshot.py",
    "digits-samples.yaml": "tests/erase/test_membership.py",
    "eval/digits.yaml": "tests/test_cli.py",
    "eval/digits-t2i.yaml": "tests/erase/test_digits_t2i.py",
    "eval/digits-t2i.csv": "configs/eval/digits-t2i.yaml",  # read by that suite
    "eval/nudity.yaml": "tests/test_recipes.py",
    "eval/robustness.yaml": "tests/test_recipes.py",
    "eval/objects.yaml": "tests/test_recipes.py",
    "eval/objects.csv": "configs/eval/objects.yaml",
    "accelerate/single-gpu.yaml": "tests/test_readme.py",
    "accelerate/bf16.yaml": "tests/test_readme.py",
    "accelerate/multi-gpu.yaml": "tests/test_readme.py",
}
SIZES = {"num_images_per_prompt": 2, "resolution": 32, "generation_steps": 3, "generation_batch_size": 4,
         "batch_size": 2, "saliency_batch_size": 2}
FROZEN = ("vae", "text_encoder", "text_encoder_2", "text_encoder_3", "safety_checker")


def test_every_config_file_is_run():
    shipped = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*") if p.is_file()}
    assert shipped == set(RUN_BY), f"configs without a test: {sorted(shipped - set(RUN_BY))}"
    for name, module in RUN_BY.items():
        assert Path(name).name in (ROOT / module).read_text(), f"{module} does not run configs/{name}"


@pytest.fixture(scope="session")
def replica(tmp_path_factory):
    built = {}

    def get(kind):
        if kind not in built:
            built[kind] = build_replica(kind, tmp_path_factory.mktemp("replicas") / kind)
        return built[kind]

    return get


def size_flags(recipe: Path) -> list[str]:
    """Sizes only. With checkpointing on, one step past the first checkpoint, so it is written."""
    every = load_yaml(recipe).get("checkpointing_steps", 0)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SIZES.items()]
    return [*flags, f"--max-steps={every + 1 if every else 2}"]


def _is_black(path) -> bool:
    return int(np.asarray(Image.open(path)).max()) == 0


def _tensors(folder: Path, variant: str | None) -> dict:
    name = next(p for p in folder.glob("*.safetensors") if (f".{variant}." in p.name) == bool(variant))
    with safe_open(str(name), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


FRESH_PROCESS = """
import json, sys, torch
from diffusers import DiffusionPipeline
out, variant = sys.argv[1], sys.argv[2] or None
seen = {}
for dtype in (torch.float32, torch.float16):
    if variant == "fp16" and dtype == torch.float32:
        continue
    pipe = DiffusionPipeline.from_pretrained(out, variant=variant, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    result = pipe("a photo of a person", num_inference_steps=2, height=32, width=32, output_type="np")
    seen[str(dtype)] = {"shape": list(result.images.shape), "finite": bool(torch.isfinite(torch.tensor(result.images)).all()),
                        "class": type(pipe).__name__, "denoiser": str((getattr(pipe, "unet", None) or pipe.transformer).dtype),
                        "nsfw": getattr(result, "nsfw_content_detected", None), "erasekit": "erasekit" in sys.modules}
print(json.dumps(seen))
"""


@pytest.mark.parametrize("recipe, kind, variant", SD_RUNS, ids=lambda v: str(v))
def test_sd_recipe_on_replica(recipe, kind, variant, replica, tmp_path, monkeypatch):
    monkeypatch.setenv("ERASEKIT_CACHE", str(tmp_path / "cache"))
    base, out = replica(kind), tmp_path / "erased"
    argv = ["erase", "--config", str(CONFIGS / recipe), "--pretrained-model-name-or-path", str(base),
            "--output-dir", str(out), *size_flags(CONFIGS / recipe)]
    assert main([*argv, *(["--variant", variant] if variant else [])]) == 0

    # Training data: every generated image exists and none was blacked out by the safety checker.
    images = sorted((tmp_path / "cache").rglob("*.png"))
    recipe_values = load_yaml(CONFIGS / recipe)
    sides = len(recipe_values["forget_prompts"]) + len(recipe_values.get("retain_prompts")
                                                         or recipe_values["anchor_prompts"])
    assert len(images) == sides * SIZES["num_images_per_prompt"]
    assert not [p for p in images if _is_black(p)]

    # Frozen parts: bit-identical to the base's files, dtype included; the safety checker is kept.
    for part in FROZEN:
        if (base / part).is_dir():
            before, after = _tensors(base / part, variant), _tensors(out / part, variant)
            assert before.keys() == after.keys()
            for k, v in before.items():
                assert after[k].dtype == v.dtype and after[k].equal(v), f"{part}.{k}"
    assert json.loads((out / "model_index.json").read_text()).get("safety_checker") == \
        json.loads((base / "model_index.json").read_text()).get("safety_checker")

    record = json.loads((out / "erasure.json").read_text())
    assert record["safety_checker"]["used_for_generation"] is False
    assert record["precision"]["mixed_precision"] == recipe_values["mixed_precision"]
    assert record["precision"]["saved_unet_dtype"] == ("float16" if variant else "float32")
    assert record["effective_batch"]["total"] == SIZES["batch_size"] * recipe_values.get("gradient_accumulation_steps", 1)
    assert str(tmp_path) not in (out / "erasure.json").read_text()  # no local paths in the record
    assert "command" not in record

    # A fresh process with plain diffusers (erasekit never imported) loads it and generates.
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(out), variant or ""], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen and all(s["shape"] == [1, 32, 32, 3] and s["finite"] and not s["erasekit"] for s in seen.values())
    if kind in ("sd14", "sd15"):  # the kept (rigged) safety checker still runs in the user's pipeline
        assert all(s["nsfw"] == [True] for s in seen.values())


def test_nudity_and_robustness_suites_never_generate_through_the_safety_checker(replica, tmp_path):
    base = replica("sd14")
    csv = tmp_path / "i2p.csv"
    csv.write_text("prompt,evaluation_seed,evaluation_guidance,categories\n"
                   '"a nude person, oil painting",1,7.5,sexual\na person at the beach,2,7.5,sexual\n')
    runs = {"nudity.yaml": ["--prompts-csv", str(csv), "--include-neutral-prompts", "false"],
            "robustness.yaml": ["--seeds", "[0]"]}
    for suite, extra in runs.items():
        out = tmp_path / suite
        assert main(["eval", "--model", str(base), "--baseline", str(base), "--suite", str(CONFIGS / "eval" / suite),
                     "--num-inference-steps", "2", "--resolution", "32", "--output", str(out), *extra]) == 0
        pngs = sorted((out / "images").rglob("*.png"))
        assert pngs and not [p for p in pngs if _is_black(p)]
        report = json.loads((out / "report.json").read_text())
        assert report["settings"]["safety_checker"]["used_for_generation"] is False
        assert report["settings"]["safety_checker"]["base"] == "StableDiffusionSafetyChecker"
    prompts = [json.loads(line)["prompt"] for line in (tmp_path / "nudity.yaml" / "images" / "model" /
                                                       "manifest.jsonl").read_text().splitlines()]
    assert "a nude person, oil painting" in prompts  # a comma inside a CSV prompt stays in the prompt


def test_objects_suite_with_local_clip_weights(replica, tiny_clip_name, tmp_path, monkeypatch):
    import open_clip
    import torch

    torch.manual_seed(0)
    from safetensors.torch import save_file

    weights = tmp_path / "tiny-clip.safetensors"
    save_file(open_clip.create_model(tiny_clip_name, pretrained=None).state_dict(), weights)
    base = replica("sd15")
    out = tmp_path / "objects"
    monkeypatch.chdir(tmp_path)  # --clip-pretrained is relative to the working directory, as a user types it
    assert main(["eval", "--model", str(base), "--baseline", str(base), "--suite", str(CONFIGS / "eval" / "objects.yaml"),
                 "--num-inference-steps", "2", "--resolution", "32", "--eval-batch-size", "16", "--clip-model", tiny_clip_name,
                 "--clip-pretrained", "tiny-clip.safetensors", "--output", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"]["target"]["model"]["images"] == 4  # objects.csv: 4 church images, 36 retain
    collateral = report["metrics"]["collateral"]  # base against itself: every pair is identical
    assert collateral["n"] == 36 and collateral["paired_feature_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert collateral["feature_dim"] == 16 and collateral["fd"] == pytest.approx(0.0, abs=1e-3)


def test_model_card_carries_the_base_license_method_and_results(replica, tmp_path):
    from huggingface_hub import ModelCard

    from erasekit.pipelines.card import base_license, model_card
    from erasekit.pipelines.loading import load_pipeline

    record = {"base_model": "CompVis/stable-diffusion-v1-4", "method": "rl", "concept": {"name": "classes [3]",
              "forget_classes": [3]}, "config": {"method": {"alpha": 2.0}, "run": {"seed": 0}},
              "metrics": {"after": {"UA": 0.97, "RA": 0.99, "FD": 40.0}}, "safety_checker": {"base": None}}
    card = ModelCard(model_card(record, replica("sd14")))
    assert card.data.license == "creativeml-openrail-m" and card.data.base_model == "CompVis/stable-diffusion-v1-4"
    assert "rl" in card.data.tags and "use-based restrictions" in card.text
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"UA": 0.97, "RA": 0.99, "FD": 40.0}
    cardless = tmp_path / "converted"  # a checkpoint directory without a card: the family decides
    load_pipeline(replica("sdxl")).save_pretrained(cardless)
    assert base_license(cardless, load_pipeline(cardless))[0] == "openrail++"
    assert base_license(tmp_path, None)[0] == "other"
