"""Erasure end to end on tiny models of every text-to-image family, on CPU: Stable Diffusion 1.x, 2.x
(v-prediction), SDXL, and the flow-matching transformers SD3 and FLUX."""

import json
import math

import pytest
import torch
from diffusers import DiffusionPipeline
from safetensors import safe_open

import erasekit
from erasekit.erase.masks import load_mask
from erasekit.pipelines.adapters import adapter_for
from erasekit.pipelines.delta import apply_delta_to_pipeline
from tiny import (
    tiny_flux_pipeline,
    tiny_sd3_pipeline,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)

BUILDERS = {
    "sd1-epsilon": lambda: tiny_sd_pipeline("epsilon"),
    "sd2-v": lambda: tiny_sd_pipeline("v_prediction"),
    "sdxl": tiny_sdxl_pipeline,
    "sd3": tiny_sd3_pipeline,
    "flux": tiny_flux_pipeline,
}
CONCEPT = dict(
    forget_prompts=["a photo of a church"],
    anchor_prompts=["a photo of a house", "a photo of a tree"],
    num_images_per_prompt=2,
    generation_steps=2,
    resolution=32,
    batch_size=2,
    saliency_batch_size=2,
    max_steps=3,
    learning_rate=1e-3,
    ratio=0.3,
    seed=0,
)


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_tiny_text_to_image_erase_end_to_end(family, tmp_path, monkeypatch):
    monkeypatch.setenv("ERASEKIT_CACHE", str(tmp_path / "cache"))
    base_dir = tmp_path / "base"
    BUILDERS[family]().save_pretrained(base_dir)
    base = DiffusionPipeline.from_pretrained(base_dir)
    out = tmp_path / "erased"
    result = erasekit.erase(pretrained_model_name_or_path=str(base_dir), output_dir=str(out), **CONCEPT)

    erased = DiffusionPipeline.from_pretrained(out)  # plain diffusers, no erasekit classes
    assert type(erased) is type(base)
    mask = load_mask(result.mask_path, adapter_for(base).denoiser)
    before_unet, after_unet = adapter_for(base).denoiser.state_dict(), adapter_for(erased).denoiser.state_dict()
    moved = 0
    for name, m in mask.masks.items():
        assert torch.equal(after_unet[name][~m], before_unet[name][~m]), name
        moved += int((after_unet[name][m] != before_unet[name][m]).sum())
    assert moved > 0
    for part in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        if hasattr(base, part):
            b, a = getattr(base, part).state_dict(), getattr(erased, part).state_dict()
            assert all(torch.equal(b[k], a[k]) for k in b), part
    erased.set_progress_bar_config(disable=True)
    image = erased("a photo of a church", num_inference_steps=2, height=32, width=32, output_type="np").images
    assert image.shape == (1, 32, 32, 3) and (image >= 0).all()

    # Delta: its tensors fit in (ratio + 1/32) of the UNet's bytes (the header of names comes on top),
    # and it rebuilds the erased UNet bit for bit.
    delta = out / "erasure_delta.safetensors"
    unet_bytes = sum(t.numel() * t.element_size() for t in before_unet.values())
    with safe_open(str(delta), framework="pt") as f:
        payload = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys())
        assert int(f.metadata()["payload_bytes"]) == payload
    assert payload <= (0.3 + 1 / 32) * unet_bytes
    apply_delta_to_pipeline(base_dir, delta, tmp_path / "applied")
    rebuilt = adapter_for(DiffusionPipeline.from_pretrained(tmp_path / "applied")).denoiser.state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in after_unet.items())

    record = json.loads((out / "erasure.json").read_text())
    assert record["concept"]["forget_prompts"] == ["a photo of a church"]
    assert record["config"]["method"]["ratio"] == 0.3 and record["seed"] == 0
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "\nlicense: " in card.split("\n---\n")[0] and "- erasekit" in card and "- concept-erasure" in card
    assert "report/grid.png" in card and (out / "report" / "grid.png").is_file()
    assert result.report_path == out / "report" / "report.md" and result.report_path.is_file()


def test_generated_data_is_cached_and_resumed(tmp_path, monkeypatch):
    from erasekit.pipelines.generation import GenerationRecord, generate_to_folder, read_manifest

    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    records = [GenerationRecord("a photo of a church", seed=s, guidance=7.5, steps=2, path=f"{s}.png")
               for s in range(3)]
    calls = []
    original = type(pipe).__call__

    def interrupted_after_one_batch(self, **kwargs):
        calls.append(len(kwargs["prompt"]))
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return original(self, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", interrupted_after_one_batch)
    with pytest.raises(RuntimeError, match="interrupted"):
        generate_to_folder(pipe, records, tmp_path, batch_size=2, height=32, width=32)
    assert [r["seed"] for r in read_manifest(tmp_path)] == [0, 1]
    first = (tmp_path / "0.png").stat().st_mtime_ns
    calls.clear()
    done = generate_to_folder(pipe, records, tmp_path, batch_size=2, height=32, width=32)
    assert calls == [1]  # only the batch with the missing image runs again
    assert (tmp_path / "0.png").stat().st_mtime_ns == first
    assert [r["seed"] for r in done] == [0, 1, 2] and len(read_manifest(tmp_path)) == 3


def test_text_model_needs_forget_and_anchor_prompts(tmp_path):
    base_dir = tmp_path / "base"
    tiny_sd_pipeline().save_pretrained(base_dir)
    with pytest.raises(erasekit.ConfigError, match="'forget_prompts' is empty"):
        erasekit.erase(pretrained_model_name_or_path=str(base_dir), output_dir=str(tmp_path / "o"))
    with pytest.raises(erasekit.ConfigError, match="'anchor_prompts' is empty"):
        erasekit.erase(pretrained_model_name_or_path=str(base_dir), output_dir=str(tmp_path / "o"),
                       forget_prompts=["a church"])
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o*"))


def test_folder_data_with_captions_or_one_prompt(tmp_path):
    from PIL import Image

    from erasekit.erase.text import folder_images

    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    assert [p for _, p in folder_images(tmp_path, "a church")] == ["a church", "a church"]
    with pytest.raises(erasekit.ConfigError, match="no metadata.jsonl"):
        folder_images(tmp_path, None)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "a red church"}\n')
    assert [(p.name, t) for p, t in folder_images(tmp_path, None)] == [("a.png", "a red church")]
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "gone.png", "text": "x"}\n')
    with pytest.raises(erasekit.ConfigError, match="missing image"):
        folder_images(tmp_path, None)


def test_scope_presets_on_a_stable_diffusion_unet():
    from erasekit.erase.saliency import parameters_in_scope

    unet = tiny_sd_pipeline().unet
    xattn = parameters_in_scope(unet, "xattn")
    assert xattn and all(".attn2." in n for n in xattn)
    attn = parameters_in_scope(unet, "attn")
    assert set(xattn) < set(attn) and all(".attn1." in n or ".attn2." in n for n in attn)
    assert not any("norm" in n for n in parameters_in_scope(unet, "no-norm"))


@pytest.mark.parametrize("build", [tiny_sd3_pipeline, tiny_flux_pipeline], ids=["sd3", "flux"])
def test_scope_presets_on_flow_matching_transformers(build):
    from erasekit.erase.saliency import parameters_in_scope

    adapter = adapter_for(build())
    transformer, presets = adapter.denoiser, adapter.scopes
    xattn = parameters_in_scope(transformer, "xattn", presets)
    assert xattn and all(".attn.add_" in n or ".attn.to_add_out." in n for n in xattn)
    attn = parameters_in_scope(transformer, "attn", presets)
    assert set(xattn) < set(attn) and all(".attn." in n for n in attn)
    assert not any("norm" in n for n in parameters_in_scope(transformer, "no-norm", presets))
    assert len(parameters_in_scope(transformer, "all", presets)) == len(list(transformer.parameters()))


def test_farthest_anchor_keeps_the_anchor_prompt_whose_images_are_farthest():
    from erasekit.erase.tasks import ConditionTask, farthest_anchor
    from erasekit.errors import ConfigError

    adapter = adapter_for(tiny_sd_pipeline())
    forget_x = torch.zeros(3, 4, 4, 4)
    near, far = torch.full((2, 4, 4, 4), 0.5), torch.full((2, 4, 4, 4), -2.0)
    table = ["", "a photo of a church", "a photo of a house", "a photo of a tree"]

    def task(retain_c):
        return ConditionTask(adapter, adapter.training_scheduler(), forget_x, torch.tensor([1, 1, 1]),
                             torch.cat([near, far]), torch.tensor(retain_c), anchors=[2, 3], null=0,
                             prompt_table=table)

    chosen = task([2, 2, 3, 3])
    assert farthest_anchor(chosen) == "a photo of a tree" and chosen.anchors.tolist() == [3]
    swapped = task([3, 3, 2, 2])
    assert farthest_anchor(swapped) == "a photo of a house" and swapped.anchors.tolist() == [2]
    with pytest.raises(ConfigError, match="'remap: farthest'.*retain_prompts"):
        farthest_anchor(task([4, 4, 4, 4]))  # retain images of other prompts only


def test_remap_farthest_erases_towards_one_anchor_prompt(tmp_path, monkeypatch):
    monkeypatch.setenv("ERASEKIT_CACHE", str(tmp_path / "cache"))
    base_dir = tmp_path / "base"
    tiny_sd_pipeline().save_pretrained(base_dir)
    erasekit.erase(pretrained_model_name_or_path=str(base_dir), output_dir=str(tmp_path / "erased"), remap="farthest",
                   evaluate=False, **CONCEPT)
    record = json.loads((tmp_path / "erased" / "erasure.json").read_text())
    anchors = record["concept"]["anchor_prompts"]
    assert len(anchors) == 1 and anchors[0] in CONCEPT["anchor_prompts"]
    assert record["config"]["method"]["remap"] == "farthest"


def test_rum_refinement_on_a_text_to_image_model(tmp_path, monkeypatch):
    """`refine: rum` on prompts: the forget prompts' generated images are split by the proxy and unlearned
    low, medium, high, each stage with its own mask and budget; per-subset metrics are recorded. The
    proxies that read the digits training run are refused for a text-to-image model."""
    monkeypatch.setenv("ERASEKIT_CACHE", str(tmp_path / "cache"))
    base_dir = tmp_path / "base"
    tiny_sd_pipeline("epsilon").save_pretrained(base_dir)
    concept = {**CONCEPT, "forget_prompts": ["a photo of a church", "a church tower"], "num_images_per_prompt": 3}
    out = tmp_path / "rum"
    erasekit.erase(pretrained_model_name_or_path=str(base_dir), output_dir=str(out), refine="rum",
                   refine_steps=[2, 2, 2], refine_draws=2, refine_proxy="cond_magnitude", evaluate=False, **concept)
    record = json.loads((out / "erasure.json").read_text())
    refined = record["metrics"]["refine"]
    assert refined["proxy"] == "cond_magnitude" and [s["subset"] for s in refined["stages"]] == ["low", "medium", "high"]
    assert sum(p["count"] for p in refined["parts"].values()) == 6  # 2 forget prompts x 3 images
    parts = list(refined["parts"].values())
    assert all(a["score_max"] <= b["score_min"] for a, b in zip(parts, parts[1:]))  # split by the proxy's order
    assert set(refined["stages"][-1]["after"]) == {"low", "medium", "high", "retain"}
    assert record["mask"]["refine"] == "rum" and record["mask"]["stages"] == "3"
    with pytest.raises(erasekit.ConfigError, match="'refine_proxy: training_loss'"):
        erasekit.erase(pretrained_model_name_or_path=str(base_dir), output_dir=str(tmp_path / "no"), refine="rum",
                       refine_proxy="training_loss", **concept)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_the_retain_data_targets_run_on_every_text_family(family, tmp_path, monkeypatch):
    """`null_target` and `forget_target: retain-data` on each family's own noising and target (epsilon, v,
    flow), over the base's images of the anchor prompts: finite losses, and the data target really used."""
    from erasekit.erase.methods import shared
    original, calls = shared.retain_data_target, []

    def counted(task, noisy):
        target = original(task, noisy)
        calls.append(bool(torch.isfinite(target).all()))
        return target

    monkeypatch.setattr(shared, "retain_data_target", counted)
    monkeypatch.setenv("ERASEKIT_CACHE", str(tmp_path / "cache"))
    base_dir = tmp_path / "base"
    BUILDERS[family]().save_pretrained(base_dir)
    out = tmp_path / "erased"
    erasekit.erase(pretrained_model_name_or_path=str(base_dir), output_dir=str(out), evaluate=False, log_every=1,
                   null_target="retain-data", forget_target="retain-data", data_min_level=0.0, null_batch_size=2,
                   **{**CONCEPT, "max_steps": 2})
    logs = [json.loads(x) for x in (out / "logs.jsonl").read_text().splitlines() if "null_loss" in x]
    assert len(logs) == 2 and all(math.isfinite(r["null_loss"]) and math.isfinite(r["forget_loss"]) for r in logs)
    assert len(calls) == 4 and all(calls)  # the forget term and the null term, at each step
