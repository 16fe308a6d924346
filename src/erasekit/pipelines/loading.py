"""Load pipelines from bundled names, local diffusers directories and Hub ids."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.utils import logging as diffusers_logging
from huggingface_hub import hf_hub_download
from safetensors import safe_open
from transformers.utils import logging as transformers_logging

from ..errors import ModelLoadError
from . import layout
from .pipeline_class_conditional import ClassConditionalPipeline

BUNDLED_PREFIX = "bundled:"
BUNDLED_DIR = Path(__file__).parent / "bundled"
BUNDLED_MODELS = {
    "digits-cfg": "class-conditional UNet on scikit-learn digits, 16x16, with a CFG null label",
    "digits-classifier": "small CNN judge for the digits, used by the evaluator",
    "digits-t2i": "tiny text-to-image model with the Stable Diffusion architecture, on captioned digits",
}
_HUB_ID = re.compile(r"^[\w][\w.-]*/[\w][\w.-]*$")
_PIPELINE_CLASSES: dict[str, type[DiffusionPipeline]] = {"ClassConditionalPipeline": ClassConditionalPipeline}


def bundled_path(name: str) -> Path:
    """Local directory of a bundled model, e.g. `bundled_path("digits-cfg")`."""
    name = name.removeprefix(BUNDLED_PREFIX)
    if name not in BUNDLED_MODELS:
        raise ModelLoadError(f"unknown bundled model '{name}'; available: {', '.join(sorted(BUNDLED_MODELS))}")
    path = BUNDLED_DIR / name
    if not path.is_dir() or not any(path.iterdir()):
        raise ModelLoadError(
            f"bundled model '{name}' is missing from {path}; rebuild it with `erasekit train-base digits`"
        )
    return path


def resolve_model_path(path_or_id: str | os.PathLike) -> str:
    """Map `bundled:NAME` to its directory; leave local paths and Hub ids as they are."""
    text = str(path_or_id)
    if text.startswith(BUNDLED_PREFIX):
        return str(bundled_path(text))
    return text


def _pipeline_class_name(path_or_id: str, revision: str | None) -> str:
    if os.path.isdir(path_or_id):
        index = Path(path_or_id) / "model_index.json"
        if not index.is_file():
            raise ModelLoadError(
                f"'{path_or_id}' is not a diffusers pipeline directory (no model_index.json); "
                f"pass a directory written by save_pretrained or by `erasekit erase`"
            )
        return json.loads(index.read_text())["_class_name"]
    if os.path.exists(path_or_id):
        raise ModelLoadError(f"'{path_or_id}' is a file but not a .safetensors or .ckpt checkpoint; pass a "
                             f"checkpoint, a diffusers pipeline directory or a Hub id")
    if not _HUB_ID.match(path_or_id):
        raise ModelLoadError(f"model path '{path_or_id}' does not exist; check the path")

    try:
        index = hf_hub_download(path_or_id, "model_index.json", revision=revision)
    except Exception as exc:  # network, auth and missing-repo errors all end here
        raise ModelLoadError(
            f"model '{path_or_id}' is not a local directory and could not be fetched from the Hugging Face Hub "
            f"({type(exc).__name__}); check the path, or download the model and pass its directory"
        ) from None
    return json.loads(Path(index).read_text())["_class_name"]


SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def _is_sdxl_checkpoint(path: str) -> bool:
    """SDXL checkpoints carry a second text encoder under `conditioner.embedders.1`."""
    if not path.endswith(".safetensors"):
        return False

    with safe_open(path, framework="pt") as f:
        return any(key.startswith("conditioner.embedders.1") for key in f.keys())


def _load_single_file(path: str, torch_dtype=None, **kwargs: Any) -> DiffusionPipeline:
    """An original-format SD 1.x/2.x or SDXL checkpoint, through diffusers' `from_single_file`."""

    try:
        cls = StableDiffusionXLPipeline if _is_sdxl_checkpoint(path) else StableDiffusionPipeline
        pipe = cls.from_single_file(path, **layout.dtype_argument(torch_dtype), **kwargs)
    except Exception as exc:  # diffusers raises many types here, including network errors for configs
        raise ModelLoadError(
            f"could not load the single-file checkpoint '{path}' ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160]}); offline, pass config=<a local diffusers directory of the same "
            f"architecture>"
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


PICKLE_HINT = ("a pickle can run any code when it is loaded; convert it to safetensors, or pass --allow-pickle "
               "(allow_pickle=True) if you trust its source")


def _local_snapshot(path_or_id: str, revision: str | None, variant: str | None) -> str:
    """A Hub id's files in the local cache (downloaded if needed), so that every later step, from the
    dtype the weights are stored in to copying the frozen parts, reads local files as it does for a
    directory."""
    _pipeline_class_name(path_or_id, revision)  # a clear error for a missing path or an unreachable Hub
    try:
        return str(DiffusionPipeline.download(path_or_id, revision=revision, variant=variant, use_safetensors=True))
    except Exception as exc:  # network, auth and missing-file errors all end here
        raise ModelLoadError(f"could not download model '{path_or_id}' from the Hugging Face Hub "
                             f"({type(exc).__name__}); check the id, or download it and pass its directory") from None


def load_pipeline(
    path_or_id: str | os.PathLike,
    torch_dtype: torch.dtype | None = None,
    revision: str | None = None,
    variant: str | None = None,
    allow_pickle: bool = False,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> DiffusionPipeline:
    """Load the right pipeline for a bundled name, a local directory, a Hub id or a single checkpoint file.

    Every component is loaded in one stated dtype, whatever its config declares (SDXL's text-encoder
    configs say float16 while the repository's plain files are float32; transformers would follow the
    config and the pipeline would not run).

    Args:
        path_or_id: `bundled:NAME`, a directory written by `save_pretrained`, an `org/name` Hub id, or an
            original-format `.safetensors`/`.ckpt` file (SD 1.x/2.x/XL, through `from_single_file`).
        torch_dtype: dtype of every component. None: float32 where the pipeline runs on CPU, else the
            dtype the denoiser's weights are stored in (see `default_dtype`).
        revision: Hub revision.
        variant: weights variant, e.g. "fp16". None: the plain files, or the one variant a folder holds
            when it has no plain files.
        allow_pickle: also load pickle-based weights (`.ckpt`, `.bin`). Off by default: only safetensors
            load, and remote code never runs (`trust_remote_code` is never passed).
        device: where the pipeline will run, for the default dtype; None: CUDA if available, else CPU.
    """
    path = resolve_model_path(path_or_id)
    if os.path.isfile(path) and path.endswith(SINGLE_FILE_SUFFIXES):
        if not path.endswith(".safetensors") and not allow_pickle:
            raise ModelLoadError(f"'{path_or_id}' is a pickle-based checkpoint; {PICKLE_HINT}")
        return _load_single_file(path, torch_dtype=torch_dtype or torch.float32, **kwargs)
    if not os.path.isdir(path):
        path = _local_snapshot(path, revision, variant)
    class_name = _pipeline_class_name(path, revision)
    variant = variant or layout.only_variant(path)
    if torch_dtype is None:
        torch_dtype = default_dtype(path, variant, device)
    _warn_half_on_cpu(torch_dtype, device)
    pipeline_cls = _PIPELINE_CLASSES.get(class_name, DiffusionPipeline)
    options = {k: v for k, v in dict(revision=revision, variant=variant).items() if v}
    options.update(layout.dtype_argument(torch_dtype))
    if not allow_pickle:
        options["use_safetensors"] = True
        pickled = _pickled_weights(path)
        if pickled:
            raise ModelLoadError(f"'{path_or_id}' has pickle-based weights ({pickled}) and no safetensors file "
                                 f"beside them; {PICKLE_HINT}")
    layout.check_weight_files(path, variant)
    pipe = _from_pretrained(pipeline_cls, path, path_or_id, {**options, **kwargs})
    pipe._erasekit_source = layout.Source(path, variant)  # where the files are, for copying the frozen parts
    return pipe


def _from_pretrained(pipeline_cls, path: str, path_or_id, options: dict) -> DiffusionPipeline:
    """`from_pretrained` without loading bars (loading is quick, and bars would bury a one-line error) and
    without a denoising bar (erasekit's callers show their own progress)."""
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        pipe = pipeline_cls.from_pretrained(path, **options)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load pipeline from '{path_or_id}': {exc}") from None
    finally:
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe


_WARNED: set[str] = set()


def _warn_half_on_cpu(dtype: torch.dtype, device) -> None:
    """One warning per process (diffusers warns at every move of the pipeline) for fp16 on a CPU."""
    on_cpu = torch.device(device).type == "cpu" if device is not None else not torch.cuda.is_available()
    if dtype == torch.float16 and on_cpu and "fp16-cpu" not in _WARNED:
        _WARNED.add("fp16-cpu")
        logging.getLogger("erasekit").warning(
            "float16 weights on a CPU: slow, and some operations are not supported there; use fp32 or bf16 "
            "(--dtype) on a CPU")


def default_dtype(path: str, variant: str | None, device: str | torch.device | None = None) -> torch.dtype:
    """float32 on CPU (half precision is slow or unsupported there); on an accelerator, the dtype the
    denoiser's weights are stored in (SD 3 medium: float16, FLUX.1-dev: bfloat16)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cpu":
        return torch.float32
    return layout.stored_dtype(path, variant) or torch.float32


def _pickled_weights(path: str) -> str | None:
    """The first pickle-based weights file of a local pipeline directory whose folder has no safetensors."""
    if not os.path.isdir(path):
        return None
    for weights in sorted(Path(path).rglob("*")):
        if weights.suffix in (".bin", ".ckpt", ".pt", ".pth", ".pkl") and weights.is_file():
            if not any(weights.parent.glob("*.safetensors")):
                return str(weights.relative_to(path))
    return None


def load_any_pipeline(model, **options) -> DiffusionPipeline:
    """A pipeline object as it is, or loaded from a name (see `load_pipeline`), with its progress bar off."""
    pipe = load_pipeline(model, **{k: v for k, v in options.items() if v}) \
        if isinstance(model, (str, os.PathLike)) else model
    pipe.set_progress_bar_config(disable=True)
    return pipe


def source_of(pipe) -> layout.Source | None:
    """The local directory and variant a pipeline was loaded from by `load_pipeline`; None for a pipeline
    built in memory or from a single file."""
    return getattr(pipe, "_erasekit_source", None)
