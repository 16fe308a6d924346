"""Push an erased model directory to the Hugging Face Hub."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from ..errors import ConfigError, ErasekitError

REQUIRED_FILES = ("README.md", "erasure.json", "model_index.json")
IGNORE_PATTERNS = [".*", "*/.*", "checkpoints/*", "*.tmp", "logs.jsonl"]
MASK_FILE = "mask.safetensors"  # the delta already holds the bit-packed mask


def staged_files(out_dir: str | os.PathLike, include_mask: bool = False) -> list[str]:
    """The files `push` uploads, relative to `out_dir`, after checking that the directory is complete.
    `mask.safetensors` (one byte per weight) only when asked: the delta holds the mask bit-packed."""
    out = Path(out_dir)
    if not out.is_dir():
        raise ConfigError(f"'{out}' is not a directory; pass the output directory of `erasekit erase`")
    missing = [name for name in REQUIRED_FILES if not (out / name).is_file()]
    if missing:
        raise ConfigError(f"'{out}' is not a complete erased model (missing {', '.join(missing)})")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    ignore = IGNORE_PATTERNS if include_mask else [*IGNORE_PATTERNS, MASK_FILE]
    return [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in ignore)]


def push_to_hub(out_dir: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None,
                include_mask: bool = False) -> str:
    """Create `repo_id` if needed and upload the staged files; returns the commit URL."""
    from huggingface_hub import HfApi, get_token

    files = staged_files(out_dir, include_mask)
    token = token or get_token()
    if not token:
        raise ErasekitError("no Hugging Face token found; run `hf auth login` or set HF_TOKEN, then push again")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(out_dir), repo_id=repo_id, allow_patterns=files,
                                 commit_message="Upload erased model (erasekit)")
    except Exception as exc:  # connection, auth and permission errors from the Hub
        raise ErasekitError(f"could not push to the Hugging Face Hub repo '{repo_id}' ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]}); check the network, the token and the repo id") from None
    return str(getattr(info, "commit_url", info))
