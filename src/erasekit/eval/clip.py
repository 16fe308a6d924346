"""CLIP through open_clip: zero-shot concept accuracy and CLIP score, with weights only from local files.

`model` is an open_clip architecture name (e.g. ViT-B-32) and `pretrained` either an open_clip tag
(e.g. laion2b_s34b_b79k, which needs the weights in the local Hugging Face cache) or a path to a
.pt/.safetensors file, or 'local-dir:DIR'.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch

from ..errors import ModelLoadError
from ..pipelines.loading import PICKLE_HINT


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """HF_HUB_OFFLINE=1 for the duration of the block only; the process environment is restored after."""
    if not offline:
        yield
        return
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before


class ClipScorer:
    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = None, device: str = "cpu",
                 allow_pickle: bool = False):
        import open_clip

        if pretrained and pretrained.endswith((".pt", ".pth", ".bin")) and not allow_pickle:
            raise ModelLoadError(f"CLIP weights '{pretrained}' are a pickle; {PICKLE_HINT}")
        offline = bool(pretrained) and not os.path.exists(pretrained) and not pretrained.startswith("local-dir:")
        try:
            with _hub_offline(offline):  # a tag fails at once instead of retrying for ~46 s
                self.model, _, self.preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained,
                                                                                       device=device)
        except Exception as exc:  # unknown tags, missing files and network errors
            raise ModelLoadError(
                f"could not load CLIP model '{model}' with weights {pretrained!r} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160]}); CLIP weights cannot be downloaded here: pass "
                f"--clip-pretrained /path/to/open_clip_model.safetensors (or 'local-dir:DIR') for a local copy"
            ) from None
        self.tokenizer = open_clip.get_tokenizer(model)
        self.device = device
        self.model.eval()

    @torch.no_grad()
    def image_features(self, images: Sequence) -> torch.Tensor:
        batch = torch.stack([self.preprocess(image.convert("RGB")) for image in images]).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_image(batch).float(), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts)).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def clip_score(self, images: Sequence, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP score per image: 100 x cosine(image, its prompt), floored at 0 (Hessel et al. 2021)."""
        cos = (self.image_features(images) * self.text_features(prompts)).sum(-1)
        return (100 * cos).clamp(min=0)

    def zero_shot(self, images: Sequence, concept: str, alternatives: Sequence[str]) -> torch.Tensor:
        """Index of the best-matching text per image; 0 means the concept won against the alternatives."""
        texts = [concept, *alternatives]
        return (self.image_features(images) @ self.text_features(texts).T).argmax(-1)


def concept_accuracy(predictions: torch.Tensor) -> float:
    """Share of images in which CLIP picks the concept over every alternative."""
    return float((predictions == 0).float().mean()) if predictions.numel() else float("nan")
