"""How a diffusers directory stores its weights: variants, dtypes, file sets, and copies that keep them.

A published repository is a set of component folders, each with plain weight files and often a
variant beside them (`model.safetensors` and `model.fp16.safetensors`). An erased model keeps that
layout: the parts the method did not change are copied file for file (so they are byte-identical to
the base and carry no local path), and the denoiser is written once per stored file set, in that set's
own dtype and file names.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils import deprecation_utils
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import ModelLoadError

WEIGHT_STEMS = ("diffusion_pytorch_model", "model")
# `model.safetensors`, `model.fp16.safetensors`, `diffusion_pytorch_model-00001-of-00002.safetensors`,
# `diffusion_pytorch_model.fp16-00001-of-00002.safetensors` (diffusers' sharded variant names).
_WEIGHT_NAME = re.compile(r"^(?:diffusion_pytorch_model|model)(?:\.(?P<variant>[A-Za-z0-9_]+))?"
                          r"(?:-\d{5}-of-\d{5})?\.safetensors$")
SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
# Weights in formats other than safetensors (PyTorch pickles, Flax, ONNX, OpenVINO), which published
# repositories carry beside the safetensors files.
OTHER_WEIGHT_SUFFIXES = (".bin", ".msgpack", ".onnx", ".onnx_data", ".pb", ".h5", ".ckpt", ".pt", ".pth", ".pkl", ".xml")


@dataclass(frozen=True)
class Source:
    """A local pipeline directory and the weights variant that was loaded from it."""

    path: str
    variant: str | None = None


def dtype_argument(dtype: torch.dtype | None) -> dict:
    """diffusers' keyword for the load dtype: `dtype` since it deprecated `torch_dtype`."""
    if dtype is None:
        return {}

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def components(path: str | os.PathLike) -> list[str]:
    """The component folders that model_index.json names (those with a library and class)."""
    index = json.loads((Path(path) / "model_index.json").read_text())
    return [name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)
            and len(value) == 2 and value[0] is not None and (Path(path) / name).is_dir()]


def file_sets(folder: str | os.PathLike) -> dict[str | None, list[Path]]:
    """Weight files of one component folder by variant (None: the plain files)."""
    sets: dict[str | None, list[Path]] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        match = _WEIGHT_NAME.match(file.name)
        if match:
            sets.setdefault(match["variant"], []).append(file)
    return sets


def weight_files(folder: str | os.PathLike, variant: str | None) -> list[Path]:
    """The files diffusers loads from `folder` for `variant`: the variant's if it has them, else the plain ones."""
    sets = file_sets(folder)
    return sets.get(variant) or sets.get(None) or []


def only_variant(path: str | os.PathLike) -> str | None:
    """The variant to load when none is asked for: the one variant of a directory whose weight folders
    hold no plain files (an erased fp16 model written by an older erasekit, say); else None."""
    if not (Path(path) / "model_index.json").is_file():
        return None
    found = set()
    for name in components(path):
        sets = file_sets(Path(path) / name)
        if None in sets:
            return None
        found.update(sets)
    return found.pop() if len(found) == 1 else None


def read_header(file: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file, checked against the file's size: a truncated or damaged
    file raises `ModelLoadError` naming it."""
    file = Path(file)
    size = file.stat().st_size
    damaged = f"weights file '{file}' is truncated or corrupt"
    hint = "download or copy it again"
    with open(file, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ModelLoadError(f"{damaged} ({size} bytes, no safetensors header); {hint}")
        (length,) = struct.unpack("<Q", raw)
        if length > size - 8:
            raise ModelLoadError(f"{damaged} (its header says {length} bytes, the file has {size}); {hint}")
        try:
            header = json.loads(f.read(length))
        except ValueError:
            raise ModelLoadError(f"{damaged} (its header is not valid JSON); {hint}") from None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    if 8 + length + max(ends, default=0) > size:
        raise ModelLoadError(f"{damaged} (its tensors need {8 + length + max(ends)} bytes, the file has {size}); "
                             f"{hint}")
    return header


def check_weight_files(path: str | os.PathLike, variant: str | None) -> None:
    """Read the header of every weight file that loading `variant` reads: a damaged one is named."""
    if not (Path(path) / "model_index.json").is_file():
        return
    for name in components(path):
        for file in weight_files(Path(path) / name, variant):
            read_header(file)


def stored_dtype(path: str | os.PathLike, variant: str | None, folder: str | None = None) -> torch.dtype | None:
    """The floating dtype most of a component's stored tensors have (default: the denoiser's folder,
    `unet` or `transformer`); None when there is no such folder."""
    names = [folder] if folder else ["unet", "transformer"]
    for name in names:
        files = weight_files(Path(path) / name, variant)
        if files:
            counts = Counter(v["dtype"] for f in files for k, v in read_header(f).items() if k != "__metadata__")
            floating = [d for d, _ in counts.most_common() if d in SAFETENSORS_DTYPES]
            return SAFETENSORS_DTYPES[floating[0]] if floating else None
    return None


def content_fingerprint(path: str | os.PathLike, variant: str | None) -> str:
    """SHA-256 of model_index.json and of every weight file that loading `variant` reads, by name."""
    digest = hashlib.sha256()
    root = Path(path)
    digest.update((root / "model_index.json").read_bytes())
    for name in components(root):
        for file in weight_files(root / name, variant):
            digest.update(f"{name}/{file.name}|".encode())
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]


def _copied(file: Path) -> bool:
    """Whether a component's file is copied: configs, tokenizer files and safetensors weights; weights in
    other formats (.bin, ONNX, Flax) only where the folder has no safetensors to load instead."""
    if file.suffix not in OTHER_WEIGHT_SUFFIXES:
        return True
    return not file_sets(file.parent)


def copy_frozen(source: str | os.PathLike, out: str | os.PathLike, changed: str) -> None:
    """Copy model_index.json and every component folder it names but `changed`, byte for byte. Nothing else
    of the base directory is copied: a repository's root can hold the original single-file checkpoint,
    which still has the concept."""
    source, out = Path(source), Path(out)
    shutil.copy2(source / "model_index.json", out / "model_index.json")
    for name in components(source):
        if name == changed:
            continue
        for file in sorted((source / name).rglob("*")):
            if file.is_file() and _copied(file):
                target = out / file.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)


def _read_tensors(file: Path) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    with safe_open(str(file), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def changed_entries(base: dict[str, torch.Tensor], erased: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Where the erased denoiser differs from the base (compared in float32), per parameter."""
    return {k: base[k].float() != v.detach().float().cpu() for k, v in erased.items() if k in base}


def write_denoiser(source: Source, out: str | os.PathLike, name: str, erased: dict[str, torch.Tensor],
                   save_dtype: torch.dtype | None = None, base: dict[str, torch.Tensor] | None = None) -> bool:
    """The erased denoiser in every file set the base's `name` folder stores, each in its own dtype and
    under its own file names: a set's tensors are the base's, with the entries the erasure changed (judged
    on the loaded set) set to the erased values as the loaded set stores them. `save_dtype` casts the
    loaded set's files instead.

    Returns False, writing nothing, when the stored names are not the module's (a checkpoint in a legacy
    format that diffusers converts on loading): the caller then saves with `save_pretrained`.
    """

    folder, target = Path(source.path) / name, Path(out) / name
    loaded = weight_files(folder, source.variant)
    if base is None:  # the loaded set's tensors, unless the caller read them already (`stored_state`)
        base = {k: v for f in loaded for k, v in _read_tensors(f)[0].items()}
    if set(base) != set(erased) or any(base[k].shape != erased[k].shape for k in base):
        return False
    # The erased values as the loaded set stores them: what the delta holds, so that `erasekit apply`
    # rebuilds every set bit for bit from the base and the delta.
    erased = {k: v.detach().cpu().to(base[k].dtype) for k, v in erased.items()}
    changed = changed_entries(base, erased)
    target.mkdir(parents=True, exist_ok=True)
    for item in folder.iterdir():  # the config and shard indexes, byte for byte; never the unerased weights
        if item.is_file() and item.suffix == ".json":
            shutil.copy2(item, target / item.name)
    for files in file_sets(folder).values():
        for file in files:
            tensors, metadata = _read_tensors(file)
            for k, tensor in tensors.items():
                if file in loaded and save_dtype is not None and tensor.is_floating_point():
                    tensors[k] = erased[k].to(save_dtype).contiguous()
                elif k in changed and changed[k].any():
                    tensor = tensor.clone()
                    tensor[changed[k]] = erased[k][changed[k]].to(tensor.dtype)
                    tensors[k] = tensor
            save_file(tensors, str(target / file.name), metadata=metadata)
    return True


def stored_state(source: Source, name: str) -> dict[str, torch.Tensor]:
    """The denoiser's tensors as the loaded file set stores them (their own dtype)."""
    return {k: v for f in weight_files(Path(source.path) / name, source.variant) for k, v in _read_tensors(f)[0].items()}


def hub_origin(path: str | os.PathLike) -> tuple[str, str] | None:
    """(repo id, revision) of a directory in the Hugging Face cache (`models--org--name/snapshots/REV`)."""
    parts = Path(path).resolve().parts
    for i, part in enumerate(parts[:-2]):
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            return part.removeprefix("models--").replace("--", "/", 1), parts[i + 2]
    return None
