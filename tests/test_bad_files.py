"""Bad files, each a `ConfigError` that names the file and what to do (never a traceback): truncated or
damaged safetensors (model, mask, delta), a delta missing a tensor, malformed metadata.jsonl, corrupt
images, an empty image folder, a data cache made for another concept; and an explicit warning for a
prompt longer than the tokenizer's limit."""

import copy
import logging

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from erasekit.erase.masks import load_mask, save_mask
from erasekit.erase.saliency import SaliencyMask
from erasekit.erase.text import _load_images, folder_images
from erasekit.errors import ConfigError, ErasekitError
from erasekit.pipelines.adapters import adapter_for
from erasekit.pipelines.delta import apply_delta, save_delta
from erasekit.pipelines.generation import GenerationRecord, generate_to_folder
from erasekit.pipelines.loading import load_any_pipeline
from tiny import tiny_class_conditional_pipeline, tiny_sd_pipeline


@pytest.fixture(scope="module")
def erased_pair():
    base = tiny_class_conditional_pipeline()
    erased = copy.deepcopy(base.unet)
    with torch.no_grad():
        for p in list(erased.parameters())[:3]:
            p.add_(0.5)
    masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in base.unet.named_parameters()}
    for n in list(masks)[:3]:
        masks[n][...] = True
    return base, erased, masks


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_mask_or_delta_is_a_clear_error(erased_pair, tmp_path):
    base, erased, masks = erased_pair
    mask = SaliencyMask(masks=masks, ratio=0.1, scope="all", metadata={})
    save_mask(mask, tmp_path / "mask.safetensors")
    save_delta(tmp_path / "delta.safetensors", base.unet, erased, masks)
    for name, load in (("mask", lambda p: load_mask(p, base.unet)),
                       ("delta", lambda p: apply_delta(copy.deepcopy(base.unet), p))):
        path = tmp_path / f"{name}.safetensors"
        _truncate(path)
        with pytest.raises(ConfigError, match=f"{name} file '.*{name}.safetensors' is not a readable safetensors"):
            load(path)


def test_a_delta_missing_a_tensor_names_it(erased_pair, tmp_path):
    base, erased, masks = erased_pair
    path = tmp_path / "delta.safetensors"
    save_delta(path, base.unet, erased, masks)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    dropped = next(k for k in tensors if k.endswith(".values"))
    save_file({k: v for k, v in tensors.items() if k != dropped}, str(path), metadata=metadata)
    with pytest.raises(ConfigError, match=f"lacks the tensor '{dropped}'"):
        apply_delta(copy.deepcopy(base.unet), path)


def test_a_pipeline_with_truncated_weights_is_a_clear_error(tmp_path):
    tiny_class_conditional_pipeline().save_pretrained(tmp_path / "model")
    _truncate(tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ErasekitError, match=r"'.*unet/diffusion_pytorch_model.safetensors' is truncated or corrupt "
                                            r"\(its tensors need \d+ bytes, the file has \d+\); download or copy it again"):
        load_any_pipeline(str(tmp_path / "model"))
    (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(ErasekitError, match="is truncated or corrupt \\(2 bytes, no safetensors header\\)"):
        load_any_pipeline(str(tmp_path / "model"))


@pytest.mark.parametrize("line, says", [
    ('{"file_name": "a.png", "text": "x"', "line 2 is not JSON"),
    ('{"file_name": "a.png"}', "line 2 needs string 'file_name' and 'text'"),
    ('["a.png", "x"]', "line 2 needs string"),
    ('{"file_name": "../../etc/passwd", "text": "x"}', "not a file inside"),
])
def test_malformed_metadata_jsonl_names_the_line(tmp_path, line, says):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "x"}\n' + line + "\n")
    with pytest.raises(ConfigError, match=says):
        folder_images(tmp_path, None)


def test_corrupt_images_and_empty_folders_are_clear_errors(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    (tmp_path / "notes.txt").write_text("not an image, and not picked up\n")
    assert [p.name for p, _ in folder_images(tmp_path, "a prompt")] == ["good.png"]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    pairs = folder_images(tmp_path, "a prompt")
    with pytest.raises(ConfigError, match="image '.*broken.png' cannot be read"):
        _load_images([p for p, _ in pairs], 8)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no images found"):
        folder_images(empty, "a prompt")


def test_a_data_cache_made_for_another_concept_is_never_reused(tmp_path):
    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)

    def records(prompt):
        return [GenerationRecord(prompt=prompt, seed=i, guidance=2.0, steps=2, path=f"0000/{i:05d}.png")
                for i in range(2)]

    generate_to_folder(pipe, records("a photo of a cat"), tmp_path, batch_size=2, height=32, width=32)
    with pytest.raises(ConfigError, match="another concept or other settings"):
        generate_to_folder(pipe, records("a photo of a dog"), tmp_path, batch_size=2, height=32, width=32)


def test_a_prompt_longer_than_the_tokenizer_limit_is_warned_about(caplog):
    adapter = adapter_for(tiny_sd_pipeline())
    long = "a photo of " + "a very large cat " * 30
    with caplog.at_level(logging.WARNING, logger="erasekit"):
        assert adapter.truncated_prompts(["a cat", long]) == [long]
    assert "keeps the first 77" in caplog.text and "a cat'" not in caplog.text
