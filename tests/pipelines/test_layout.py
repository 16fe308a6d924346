"""Loading in one stated dtype, variants found and kept, bases named and fingerprinted (pipelines/layout.py)."""

import json
import logging

import pytest
import torch

from erasekit.cli import main
from erasekit.errors import ConfigError, ModelLoadError
from erasekit.pipelines.layout import content_fingerprint, file_sets, hub_origin, only_variant, stored_dtype
from erasekit.pipelines.loading import default_dtype, load_pipeline
from erasekit.pipelines.saving import base_name
from replicas import build_replica
from tiny import tiny_class_conditional_pipeline


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return build_replica("sdxl", tmp_path_factory.mktemp("sdxl") / "sdxl")


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    return build_replica("sd3", tmp_path_factory.mktemp("sd3") / "sd3")


def _dtypes(pipe) -> dict:
    return {name: part.dtype for name, part in pipe.components.items() if isinstance(part, torch.nn.Module)}


def test_the_replicas_carry_the_published_files_facts(sdxl, sd3):
    encoder = json.loads((sdxl / "text_encoder" / "config.json").read_text())
    assert encoder["torch_dtype"] == "float16" and (encoder["bos_token_id"], encoder["eos_token_id"]) == (0, 2)
    scheduler = json.loads((sdxl / "scheduler" / "scheduler_config.json").read_text())
    assert {"clip_sample", "set_alpha_to_one", "skip_prk_steps"} <= set(scheduler)
    assert set(file_sets(sdxl / "unet")) == {None, "fp16"} and stored_dtype(sdxl, None) == torch.float32
    assert set(file_sets(sd3 / "transformer")) == {None} and stored_dtype(sd3, None) == torch.float16


def test_every_component_loads_in_the_stated_dtype_whatever_its_config_says(sdxl, sd3):
    assert set(_dtypes(load_pipeline(sdxl)).values()) == {torch.float32}  # CPU: float32, encoders included
    assert set(_dtypes(load_pipeline(sd3)).values()) == {torch.float32}
    assert set(_dtypes(load_pipeline(sdxl, torch_dtype=torch.bfloat16)).values()) == {torch.bfloat16}
    # On an accelerator the default is the denoiser's stored dtype (judged from the files, no GPU needed).
    assert default_dtype(str(sd3), None, "cuda") == torch.float16
    assert default_dtype(str(sdxl), "fp16", "cuda") == torch.float16
    assert default_dtype(str(sdxl), None, "cuda") == torch.float32
    assert default_dtype(str(sdxl), None, "cpu") == torch.float32


def test_half_precision_on_cpu_is_warned_about_once(sdxl, caplog):
    from erasekit.pipelines import loading
    from erasekit.pipelines.inference import place

    loading._WARNED.discard("fp16-cpu")
    with caplog.at_level(logging.WARNING):
        pipe = load_pipeline(sdxl, torch_dtype=torch.float16, device="cpu")
        for _ in range(3):
            place(pipe, "cpu")
        load_pipeline(sdxl, torch_dtype=torch.float16, device="cpu")
    warned = [r.getMessage() for r in caplog.records if "float16" in r.getMessage()]
    assert len(warned) == 1 and "--dtype" in warned[0]


def test_a_folder_of_variant_files_only_loads_without_being_told(tmp_path):
    pipe = tiny_class_conditional_pipeline()
    pipe.save_pretrained(tmp_path / "fp16-only", variant="fp16")
    assert only_variant(tmp_path / "fp16-only") == "fp16"
    loaded = load_pipeline(tmp_path / "fp16-only")
    assert loaded.unet.dtype == torch.float32  # float32 on CPU, read from the fp16 files
    pipe.save_pretrained(tmp_path / "both")
    pipe.save_pretrained(tmp_path / "both", variant="fp16")
    assert only_variant(tmp_path / "both") is None


def test_bases_are_named_by_hub_id_bundled_name_or_folder_name(tmp_path):
    snapshot = tmp_path / "hub" / "models--stabilityai--stable-diffusion-xl-base-1.0" / "snapshots" / "462165984030"
    snapshot.mkdir(parents=True)
    assert hub_origin(snapshot) == ("stabilityai/stable-diffusion-xl-base-1.0", "462165984030")
    assert base_name(str(snapshot)) == "stabilityai/stable-diffusion-xl-base-1.0"
    (tmp_path / "my-sdxl").mkdir()
    assert base_name(str(tmp_path / "my-sdxl")) == "my-sdxl"
    assert base_name("bundled:digits-cfg") == "bundled:digits-cfg"
    assert base_name("org/name") == "org/name"


def test_apply_refuses_a_base_whose_files_differ_from_the_recorded_fingerprint(tmp_path):
    from erasekit.api import erase

    base = tmp_path / "base"
    tiny_class_conditional_pipeline(num_classes=4, sample_size=8).save_pretrained(base)
    # What a cloned repository holds beside the diffusers files: the original single-file checkpoint at the
    # root and the denoiser in other formats. None of it is erased, so none of it may be copied.
    unerased = ["sd_xl_base_1.0.safetensors", "unet/diffusion_pytorch_model.bin", "unet/model.onnx",
                "scheduler/extra_notes.txt"]
    for name in unerased:
        (base / name).write_bytes(b"unerased")
    before = content_fingerprint(base, None)
    images = {"data_samples_per_class": 2, "data": "generated", "samples_per_class": 2, "num_inference_steps": 2}
    erase(None, pretrained_model_name_or_path=str(base), output_dir=str(tmp_path / "out"), forget=[1], max_steps=1,
          batch_size=2, saliency_batch_size=2, saliency_passes=1, evaluate=False, **images)
    record = json.loads((tmp_path / "out" / "erasure.json").read_text())
    assert record["base"]["content_fingerprint"] == before and record["base_model"] == "base"
    assert main(["apply", str(base), str(tmp_path / "out" / "erasure_delta.safetensors"), str(tmp_path / "a")]) == 0
    for out in (tmp_path / "out", tmp_path / "a"):
        assert not [n for n in unerased[:3] if (out / n).exists()]
        assert (out / "scheduler" / "extra_notes.txt").read_bytes() == b"unerased"  # a frozen part's own file
    index = base / "model_index.json"
    index.write_text(index.read_text().replace("}", ', "_note": "edited"}', 1))
    with pytest.raises(ConfigError, match="content fingerprint differs from the recorded"):
        from erasekit.pipelines.delta import apply_delta_to_pipeline

        apply_delta_to_pipeline(base, tmp_path / "out" / "erasure_delta.safetensors", tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_missing_variant_is_a_clear_error(sdxl, tmp_path, capsys):
    code = main(["eval", "--model", str(sdxl), "--variant", "int8", "--output", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "int8" in err[0] and not (tmp_path / "e").exists()
    with pytest.raises(ModelLoadError):
        load_pipeline(sdxl, variant="int8")
