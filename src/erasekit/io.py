"""Atomic writes: every output goes to a temporary path first and is renamed into place."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from .errors import ConfigError, OutputExistsError


def check_output_free(path: str | os.PathLike, overwrite: bool, what: str = "output") -> Path:
    """Raise `OutputExistsError` when `path` exists and `overwrite` is False."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{what} '{path}' already exists; pass --overwrite (overwrite=True) to replace it, "
            f"or choose another path"
        )
    return path


def staging_dir(final: str | os.PathLike) -> Path:
    """The sibling directory where `final` is built before it is renamed into place."""
    final = Path(final)
    return final.parent / f".{final.name}.erasekit-partial"


def commit_dir(staging: str | os.PathLike, final: str | os.PathLike, overwrite: bool) -> Path:
    """Rename a finished staging directory to `final`, replacing an old one only if `overwrite`."""
    staging, final = Path(staging), Path(final)
    check_output_free(final, overwrite)
    trash = final.parent / f".{final.name}.erasekit-old"  # also one left by a run killed between the renames
    if final.exists():
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(final, trash)
    os.replace(staging, final)
    shutil.rmtree(trash, ignore_errors=True)
    return final


def discard_dir(path: str | os.PathLike) -> None:
    """Remove a directory so that an interruption never leaves it half deleted under its own name: it is
    renamed to a hidden sibling first (a leftover from an earlier interruption is removed too)."""
    path = Path(path)
    trash = path.parent / f".{path.name}.erasekit-trash"
    if path.exists():
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes `final` only if the block succeeds."""
    final = Path(final)
    check_output_free(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; outputs are ordinary directories
    try:
        yield tmp
        commit_dir(tmp, final, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary file path in the same directory; it replaces `final` on success."""
    final = Path(final)
    check_output_free(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data: Mapping, overwrite: bool = True) -> Path:
    with atomic_file(path, overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    with atomic_file(path, overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


def fingerprint_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and raw bytes of a state dict, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def read_safetensors(path: str | os.PathLike, what: str, expected_format: str, missing_hint: str = ""):
    """Tensors and metadata of an erasekit safetensors file, with clear errors for a missing, unreadable
    or foreign file. `what` names the file in messages ("mask file", "delta file")."""


    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist{'; ' + missing_hint if missing_hint else ''}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:
        raise ConfigError(f"{what} '{path}' is not a readable safetensors file ({exc})") from None
    if metadata.get("format") != expected_format:
        raise ConfigError(f"{what} '{path}' was not written by erasekit (format {metadata.get('format')!r})")
    return tensors, metadata


def portable(value: Any) -> Any:
    """`value` with local filesystem paths cut to their last component: records name no user's directories."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str):
        prefix, _, rest = value.rpartition(":") if value.startswith("local-dir:") else ("", "", value)
        if os.path.isabs(rest) or os.sep in rest and os.path.exists(rest):
            return f"{prefix}:{Path(rest).name}" if prefix else Path(rest).name
    return value
