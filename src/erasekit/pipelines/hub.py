"""Push an erased model directory to the Hugging Face Hub."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import huggingface_hub

from ..errors import ConfigError, ErasekitError

REQUIRED_FILES = ("README.md", "erasure.json", "model_index.json")
# Only these are uploaded: the pipeline's components (configs, safetensors weights, tokenizer files), the
# record, the card, the delta and the report's summary files. Never checkpoints, caches, logs, generated
# evaluation images or anything else a user may have put in the folder.
ALLOW_PATTERNS = ["README.md", "erasure.json", "model_index.json", "erasure_delta.safetensors",
                  "*/config.json", "*/*.safetensors", "*/scheduler_config.json", "*/preprocessor_config.json",
                  "*/tokenizer_config.json", "*/special_tokens_map.json", "*/tokenizer.json", "*/vocab.json",
                  "*/merges.txt", "*/spiece.model", "*/added_tokens.json",
                  "report/report.md", "report/report.json", "report/grid.png", "report/metrics.png"]
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
    allow = [*ALLOW_PATTERNS, MASK_FILE] if include_mask else ALLOW_PATTERNS
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and not p.is_symlink())
    return [f for f in files if f.count("/") <= 1 and any(fnmatch.fnmatch(f, pattern) for pattern in allow)
            and not any(part.startswith(".") for part in f.split("/"))]


def push_to_hub(out_dir: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None,
                include_mask: bool = False) -> str:
    """Create `repo_id` if needed and upload the staged files; returns the commit URL."""

    files = staged_files(out_dir, include_mask)
    token = token or huggingface_hub.get_token()
    if not token:
        raise ErasekitError("no Hugging Face token found; run `hf auth login` or set HF_TOKEN, then push again")
    api = huggingface_hub.HfApi(token=token)  # looked up at call time, so tests can stand in for the Hub
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(out_dir), repo_id=repo_id, allow_patterns=files,
                                 commit_message="Upload erased model (erasekit)")
    except Exception as exc:  # connection, auth and permission errors from the Hub
        detail = (str(exc).splitlines() or [""])[0][:200].replace(token, "<token>")  # never echo the token
        raise ErasekitError(f"could not push to the Hugging Face Hub repo '{repo_id}' ({type(exc).__name__}: "
                            f"{detail}); check the network, the token and the repo id") from None
    return str(getattr(info, "commit_url", info))
