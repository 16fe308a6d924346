import copy

import pytest
import torch

from erasekit.erase.masks import MASK_FILE_KEYS, load_mask, save_mask
from erasekit.erase.saliency import SaliencyMask, select_top_ratio
from erasekit.errors import ConfigError


def _mask(unet, ratio=0.25):
    g = torch.Generator().manual_seed(0)
    scores = {n: torch.rand(p.shape, generator=g) for n, p in unet.named_parameters()}
    return SaliencyMask(select_top_ratio(scores, ratio), ratio, "all")


def test_round_trip_keeps_bits_and_metadata(tiny_pipe, tmp_path):
    unet = tiny_pipe.unet
    mask = _mask(unet)
    save_mask(mask, tmp_path / "m.safetensors", unet, concept="class 1")
    loaded = load_mask(tmp_path / "m.safetensors", unet)
    assert all(torch.equal(loaded.masks[n], mask.masks[n]) for n in mask.masks)
    assert loaded.ratio == 0.25 and loaded.scope == "all"
    assert loaded.metadata["concept"] == "class 1" and loaded.metadata["selected"] == str(mask.selected)
    assert all(m.dtype == torch.bool for m in loaded.masks.values())


def test_file_keys_are_what_save_adds_to_the_methods_metadata(tiny_pipe, tmp_path):
    """`erasure.json` strips MASK_FILE_KEYS to keep the method's own metadata: they must be exactly the
    keys that `save_mask` adds."""
    unet = tiny_pipe.unet
    mask = _mask(unet)
    mask.metadata = {"inputs": "codes", "code_seed": "1"}
    save_mask(mask, tmp_path / "m.safetensors", unet, concept="class 1")
    written = load_mask(tmp_path / "m.safetensors", unet).metadata
    assert set(written) - {"inputs", "code_seed"} == set(MASK_FILE_KEYS)
    assert {k: v for k, v in written.items() if k not in MASK_FILE_KEYS} == {"inputs": "codes", "code_seed": "1"}


def test_existing_mask_is_not_overwritten(tiny_pipe, tmp_path):
    save_mask(_mask(tiny_pipe.unet), tmp_path / "m.safetensors")
    with pytest.raises(Exception, match="already exists"):
        save_mask(_mask(tiny_pipe.unet), tmp_path / "m.safetensors")


def test_mask_of_other_weights_is_rejected(tiny_pipe, tmp_path):
    unet = tiny_pipe.unet
    save_mask(_mask(unet), tmp_path / "m.safetensors", unet)
    other = copy.deepcopy(unet)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(ConfigError, match="other base weights"):
        load_mask(tmp_path / "m.safetensors", other)


def test_bad_mask_files_are_clear_errors(tiny_pipe, tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(ConfigError, match="does not exist"):
        load_mask(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="not a readable safetensors"):
        load_mask(tmp_path / "junk.safetensors")
    save_file({"conv_in.weight": torch.ones(2, 2, dtype=torch.bool)}, tmp_path / "shape.safetensors",
              metadata={"format": "erasekit-mask-v1"})
    with pytest.raises(ConfigError, match="has shape"):
        load_mask(tmp_path / "shape.safetensors", tiny_pipe.unet)
    save_file({"conv_in.weight": torch.ones(2, dtype=torch.int64)}, tmp_path / "int.safetensors",
              metadata={"format": "erasekit-mask-v1"})
    with pytest.raises(ConfigError, match="expected torch.bool"):
        load_mask(tmp_path / "int.safetensors")
