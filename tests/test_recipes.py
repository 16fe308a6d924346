"""Every shipped recipe runs, with only the model path and sizes overridden, on replicas of real checkpoints.

The replicas (erasekit.pipelines.replicas) have every part the real checkpoints have, the SD 1.x safety
checker included, rigged here to black out every image it sees: a generation path that leaves it on
fails these tests. Each recipe keeps its own mixed precision, gradient checkpointing and checkpointing.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from erasekit.cli import main
from erasekit.config import load_yaml
from replicas import build_replica

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
# recipe file -> replica it runs on, the variant erase loads, and the dtype of the replica's plain files
# (None: as the real repository stores them, `replicas.STORAGE`). Forms: fp32 files, an fp16 variant beside
# them, and half-stored weights (SD 3 medium in fp16, FLUX.1-dev in bf16).
SD_RUNS = [
    ("sd-nudity.yaml", "sd14", None, None),
    pytest.param("sd-nudity.yaml", "sd14", "fp16", None, marks=pytest.mark.slow),  # SDXL's fp16 run covers it
    ("sd-nudity-robust.yaml", "sd14", None, None),
    ("sd-object.yaml", "sd15", None, None),
    ("sd21-nudity.yaml", "sd21", None, None),
    ("sdxl-nudity.yaml", "sdxl", None, None),
    ("sdxl-nudity.yaml", "sdxl", "fp16", None),
    ("sd3-nudity.yaml", "sd3", None, None),
    pytest.param("sd3-nudity.yaml", "sd3", None, "float32", marks=pytest.mark.slow),
    # bf16 autocast over FLUX's 512-token T5 sequence is slow on CPU: a few steps only.
    ("flux-nudity.yaml", "flux", None, None),
    pytest.param("flux-nudity.yaml", "flux", None, "float32", marks=pytest.mark.slow),
]
# Every file under configs/ and the test module that runs it (test_every_config_file_is_run checks this).
RUN_BY = {
    **{(run.values if hasattr(run, "values") else run)[0]: "tests/test_recipes.py" for run in SD_RUNS},
    "digits.yaml": "tests/erase/test_erase_digits.py",
    "digits-t2i.yaml": "tests/erase/test_digits_t2i.py",
    "digits-retrain.yaml": "tests/erase/test_baselines.py",
    "digits-oneshot.yaml": "tests/erase/test_oneshot.py",
    "digits-samples.yaml": "tests/erase/test_membership.py",
    "digits-robust.yaml": "tests/erase/test_null_branch.py",
    "digits-t2i-robust.yaml": "tests/erase/test_null_branch.py",
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


def test_every_config_file_is_run():
    shipped = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*") if p.is_file()}
    assert shipped == set(RUN_BY), f"configs without a test: {sorted(shipped - set(RUN_BY))}"
    for name, module in RUN_BY.items():
        assert Path(name).name in (ROOT / module).read_text(), f"{module} does not run configs/{name}"


@pytest.fixture(scope="session")
def replica(tmp_path_factory):
    built = {}

    def get(kind, dtype=None):
        key = (kind, dtype)
        if key not in built:
            folder = tmp_path_factory.mktemp("replicas") / f"{kind}-{dtype or 'published'}"
            built[key] = build_replica(kind, folder, dtype=getattr(torch, dtype) if dtype else None)
        return built[key]

    return get


def size_flags(recipe: Path) -> list[str]:
    """Sizes only. With checkpointing on, a checkpoint after the first step and one step past it, so it is
    written as the recipe's own schedule would write it."""
    every = load_yaml(recipe).get("checkpointing_steps", 0)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SIZES.items()]
    return [*flags, "--max-steps=2", *(["--checkpointing-steps=1"] if every else [])]


def _is_black(path) -> bool:
    return int(np.asarray(Image.open(path)).max()) == 0


FRESH_PROCESS = """
import json, sys, torch
from diffusers import DiffusionPipeline
out, loads = sys.argv[1], json.loads(sys.argv[2])
seen = {}
for variant, dtype in loads:
    pipe = DiffusionPipeline.from_pretrained(out, variant=variant, dtype=getattr(torch, dtype))
    pipe.set_progress_bar_config(disable=True)
    result = pipe("a photo of a person", num_inference_steps=2, height=32, width=32, output_type="np")
    seen[f"{variant}/{dtype}"] = {"shape": list(result.images.shape), "finite": bool(torch.isfinite(torch.tensor(result.images)).all()),
                        "class": type(pipe).__name__, "denoiser": str((getattr(pipe, "unet", None) or pipe.transformer).dtype),
                        "nsfw": getattr(result, "nsfw_content_detected", None), "erasekit": "erasekit" in sys.modules}
print(json.dumps(seen))
"""
DENOISERS = ("unet", "transformer")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _weights_by_file(folder: Path) -> dict[str, dict]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            out[file.name] = {k: f.get_tensor(k) for k in f.keys()}
    return out


def _fresh_loads(out: Path) -> list:
    """(variant, dtype) pairs a user loads: float32 always; the fp16 variant in float16 where it was written;
    the stored dtype where the plain files are half precision."""
    from erasekit.pipelines.layout import file_sets, stored_dtype

    denoiser = next(out / d for d in DENOISERS if (out / d).is_dir())
    loads = [[None, "float32"]]
    if "fp16" in file_sets(denoiser):
        loads.append(["fp16", "float16"])
    stored = stored_dtype(out, None)
    if stored != torch.float32 and [None, str(stored).removeprefix("torch.")] not in loads:
        loads.append([None, str(stored).removeprefix("torch.")])
    return loads


@pytest.mark.parametrize("recipe, kind, variant, stored", SD_RUNS, ids=lambda v: str(v))
def test_sd_recipe_on_replica(recipe, kind, variant, stored, replica, tmp_path, monkeypatch, capsys,
                              no_deprecations):
    """erase -> eval -> apply -> a fresh process with plain diffusers, on a replica stored as published."""
    monkeypatch.setenv("ERASEKIT_CACHE", str(tmp_path / "cache"))
    base, out = replica(kind, stored), tmp_path / "erased"
    argv = ["erase", "--config", str(CONFIGS / recipe), "--pretrained-model-name-or-path", str(base),
            "--output-dir", str(out), *size_flags(CONFIGS / recipe)]
    capsys.readouterr()
    assert main([*argv, *(["--variant", variant] if variant else [])]) == 0
    summary = capsys.readouterr().out
    recipe_values = load_yaml(CONFIGS / recipe)

    # Training data: every generated image exists and none was blacked out by the safety checker.
    images = sorted((tmp_path / "cache").rglob("*.png"))
    sides = len(recipe_values["forget_prompts"]) + len(recipe_values.get("retain_prompts")
                                                         or recipe_values["anchor_prompts"])
    assert len(images) == sides * SIZES["num_images_per_prompt"]
    assert not [p for p in images if _is_black(p)]

    # Layout: the same files as the base (plus erasekit's own), every frozen one byte for byte.
    denoiser = next(d for d in DENOISERS if (base / d).is_dir())
    before, after = _files(base), _files(out)
    assert {f for f in before if f != "README.md"} <= set(after)
    for name, content in before.items():
        if not name.startswith(f"{denoiser}/") and name != "README.md":
            assert after[name] == content, f"{name} differs from the base's file"
    base_weights, erased_weights = _weights_by_file(base / denoiser), _weights_by_file(out / denoiser)
    assert base_weights.keys() == erased_weights.keys()  # every file set: fp32 and fp16 variant, or half-stored
    for file, tensors in base_weights.items():
        assert {k: v.dtype for k, v in tensors.items()} == {k: v.dtype for k, v in erased_weights[file].items()}
    loaded = f"diffusion_pytorch_model{'.' + variant if variant else ''}.safetensors"  # the file set erase read
    assert [k for k, v in base_weights[loaded].items() if not v.equal(erased_weights[loaded][k])], "nothing changed"
    for part in ("text_encoder", "text_encoder_2", "vae", "tokenizer"):  # no local path anywhere
        for name in after:
            if name.startswith(part + "/") and not name.endswith(".safetensors"):
                assert str(base) not in after[name].decode() and "_name_or_path" not in after[name].decode(), name
    assert str(tmp_path) not in (out / "README.md").read_text() + (out / "erasure.json").read_text()

    record = json.loads((out / "erasure.json").read_text())
    assert record["safety_checker"]["used_for_generation"] is False
    assert record["precision"]["mixed_precision"] == recipe_values["mixed_precision"]
    stored_as = str(next(iter(base_weights[loaded].values())).dtype).removeprefix("torch.")
    assert record["precision"]["base_unet_dtype"] == record["precision"]["saved_unet_dtype"] == stored_as
    assert record["effective_batch"]["total"] == SIZES["batch_size"] * recipe_values.get("gradient_accumulation_steps", 1)
    assert record["base"]["kind"] == "local" and record["base_model"] == base.name
    logs = (out / "logs.jsonl").read_text()
    if recipe_values.get("null_target"):  # the unconditional branch trained, its settings recorded
        method = record["config"]["method"]
        assert '"null_loss"' in logs
        assert {k: method.get(k) for k in recipe_values if k.startswith(("null_", "remap_"))} == \
            {k: v for k, v in recipe_values.items() if k.startswith(("null_", "remap_"))}
    if recipe_values.get("adversarial_rounds"):  # the attack ran against the model in training, on its text path
        assert '"adversarial_round": 1' in logs and (out / "adversarial_conditions.safetensors").is_file()
    assert len(record["base"]["content_fingerprint"]) == 16 and "command" not in record

    # The erase's own report: the recipe's judge (NudeNet) before and after on the forget and retain prompts;
    # without one, the image counts and the pixel change, and a line that says no judge ran.
    assert re.search(r"target: images +4 +4", summary) and "retain: pixel change vs base (MAE)" in summary
    assert {"target", "retain"} <= set(record["metrics"]["after"]) and "collateral" in record["metrics"]
    if recipe_values.get("eval_suite"):
        assert re.search(r"target: nudity rate \(NudeNet\) +0\.\d{3} +0\.\d{3}", summary)
        assert "retain: nudity rate (NudeNet)" in summary and "no judge ran" not in summary
        assert "nudity rate (NudeNet)" in (out / "report" / "report.md").read_text()
        assert record["metrics"]["after"]["target"]["nudenet"]["images"] == 4
    else:
        assert "no judge ran" in summary

    # erasekit eval with the nudity suite, on the model as written (no --variant needed).
    assert main(["eval", "--model", str(out), "--baseline", str(base), "--suite", str(CONFIGS / "eval" / "nudity.yaml"),
                 "--num-inference-steps", "2", "--resolution", "32", "--seeds", "[0]", "--include-neutral-prompts",
                 "false", "--prompts", "a photo of a nude person", "--retain-prompts", "a photo of a person",
                 "--output", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["metrics"]["target"]["model"]["nudenet"]["images"] == 1

    # erasekit apply rebuilds the same files from the base and the delta.
    assert main(["apply", str(base), str(out / "erasure_delta.safetensors"), str(tmp_path / "rebuilt")]) == 0
    rebuilt = _files(tmp_path / "rebuilt")
    assert {k: v for k, v in after.items() if k in rebuilt} == rebuilt
    assert set(rebuilt) == {f for f in before if f != "README.md"}

    # A fresh process with plain diffusers (erasekit never imported) loads it and generates.
    proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(out), json.dumps(_fresh_loads(out))],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
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


@pytest.mark.parametrize("recipe, kind, variant", [("sdxl-nudity.yaml", "sdxl", "fp16"), ("sd3-nudity.yaml", "sd3", None),
                                                   ("flux-nudity.yaml", "flux", None)], ids=lambda v: str(v))
def test_the_retain_data_targets_on_half_stored_replicas(recipe, kind, variant, replica, tmp_path, monkeypatch):
    """`null_target` and `forget_target: retain-data` under the recipe's bf16 autocast, on checkpoints stored
    as published (SDXL's fp16 variant, SD 3 in fp16, FLUX in bf16): both terms logged finite at every step."""
    monkeypatch.setenv("ERASEKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "erased"
    argv = ["erase", "--config", str(CONFIGS / recipe), "--pretrained-model-name-or-path", str(replica(kind)),
            "--output-dir", str(out), *size_flags(CONFIGS / recipe), "--evaluate=false", "--log-every=1",
            "--null-target=retain-data", "--forget-target=retain-data", "--data-min-level=0", "--null-batch-size=2"]
    assert main([*argv, *(["--variant", variant] if variant else [])]) == 0
    logs = [json.loads(x) for x in (out / "logs.jsonl").read_text().splitlines() if "null_loss" in x]
    assert len(logs) == 2 and all(math.isfinite(r["null_loss"]) and math.isfinite(r["forget_loss"]) for r in logs)
