"""Mnemonic codes mixed into training (Yamashita et al., "One-Shot Machine Unlearning with Mnemonic Code").

`erasekit train-base digits --t-mix F` replaces a share F of every training batch with mnemonic codes:
fixed, seeded noise images, `codes_per_class` for each class (`fisher.mnemonic_codes`), each trained under
its class. A flag keeps the model from ever sampling them: a code of class `c` is trained under condition
id `K + c` (K the number of class embeddings, so `K + null` for a dropped label), whose embedding is row
`c` plus one learned flag vector (`FlaggedEmbedding`). Ordinary labels never carry the flag, so sampling
is unchanged in form; the codes still pass through the same class rows and weights as the class's images.

The saved UNet is a plain diffusers `UNet2DModel` with its K rows. The flag vector and the codes' recipe
(seed, count, share) are written beside it, to `mnemonic.safetensors`; `method: oneshot` with
`inputs: mnemonic` reads them back and estimates the Fisher on those very codes, under the flag, instead
of on images (`inputs: data`) or on codes the model never saw (`inputs: codes`).
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import ConfigError
from ..pipelines.loading import resolve_model_path
from .fisher import mnemonic_codes

MNEMONIC_FILE = "mnemonic.safetensors"


@dataclass(frozen=True)
class Mnemonic:
    """What a model was trained with: the flag vector and the codes' recipe."""

    flag: torch.Tensor | None  # one row of the class embedding's width (None before training: seeded)
    seed: int  # of `fisher.mnemonic_codes`
    codes_per_class: int
    t_mix: float

    def codes(self, shape, classes, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The trained codes of `classes` (the first `n` per class, at most all), and their class ids."""
        per_class = self.codes_per_class if n is None else max(1, min(n, self.codes_per_class))
        x, c = mnemonic_codes(shape, classes, self.codes_per_class, self.seed)
        keep = torch.arange(len(c)) % self.codes_per_class < per_class
        return x[keep], c[keep]


class FlaggedEmbedding(torch.nn.Module):
    """A class embedding whose ids `0..K-1` are its own rows and `K + c` is row `c` plus `flag`."""

    def __init__(self, base: torch.nn.Embedding, flag: torch.Tensor):
        super().__init__()
        self.base = base
        self.flag = torch.nn.Parameter(flag.to(base.weight.device, base.weight.dtype))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        k = self.base.num_embeddings
        flagged = ids >= k
        rows = self.base(torch.where(flagged, ids - k, ids))
        return rows + flagged.unsqueeze(-1).to(rows.dtype) * self.flag


def flag_offset(unet) -> int:
    """The id shift that flags a condition: the number of class embeddings."""
    return int(unet.config.num_class_embeds)


@contextlib.contextmanager
def flagged(unet, flag: torch.Tensor) -> Iterator[FlaggedEmbedding]:
    """Within the block, condition id `K + c` is class `c` under the flag; the UNet's own class embedding
    (the same Parameter objects, so gradients reach them) is put back afterwards."""
    base = unet.class_embedding
    if not isinstance(base, torch.nn.Embedding):
        raise ConfigError("mnemonic codes need a class-conditional UNet with a class embedding table "
                          "(num_class_embeds); this model has none")
    wrapper = FlaggedEmbedding(base, flag)
    unet.class_embedding = wrapper
    try:
        yield wrapper
    finally:
        unet.class_embedding = base


def initial_flag(unet, seed: int) -> torch.Tensor:
    """The flag vector before training: seeded standard normal, as the embedding rows are initialised."""
    dim = unet.class_embedding.embedding_dim
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))


def save_mnemonic(directory: Path, mnemonic: Mnemonic) -> None:
    save_file({"flag": mnemonic.flag.detach().float().cpu().contiguous()}, str(Path(directory) / MNEMONIC_FILE),
              metadata={"seed": str(mnemonic.seed), "codes_per_class": str(mnemonic.codes_per_class),
                        "t_mix": repr(mnemonic.t_mix)})


def carry_mnemonic(model: str, directory: Path) -> bool:
    """Copy a local base's mnemonic record into its erased copy, so that the erased model can be erased
    again from the same codes; the flag is not a UNet weight, so erasure leaves it as trained."""


    source = Path(resolve_model_path(model)) / MNEMONIC_FILE
    if not source.is_file():
        return False
    shutil.copyfile(source, Path(directory) / MNEMONIC_FILE)
    return True


def load_mnemonic(model: str) -> Mnemonic:
    """The mnemonic record beside a model (a directory or `bundled:` name)."""


    path = Path(resolve_model_path(model)) / MNEMONIC_FILE
    if not path.is_file():
        raise ConfigError(f"'inputs: mnemonic' reads the codes a model was trained with, but '{model}' has no "
                          f"{MNEMONIC_FILE}; train one with `erasekit train-base digits --t-mix 0.1`, or use "
                          "'inputs: codes' (data-free codes) or 'inputs: data'")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            flag = f.get_tensor("flag")
            mnemonic = Mnemonic(flag, int(meta["seed"]), int(meta["codes_per_class"]), float(meta["t_mix"]))
    except Exception as err:  # a truncated or foreign file
        raise ConfigError(f"{path} is not a mnemonic record written by erasekit ({type(err).__name__}: {err}); "
                          "train the model again with `erasekit train-base digits --t-mix`") from None
    if flag.ndim != 1 or mnemonic.codes_per_class < 1 or not math.isfinite(mnemonic.t_mix):
        raise ConfigError(f"{path} holds a flag of shape {tuple(flag.shape)} and codes_per_class "
                          f"{mnemonic.codes_per_class}; it is damaged: train the model again")
    return mnemonic
