"""Run the suite's detectors over generated images and turn per-image results into metrics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from ..errors import ModelLoadError
from ..pipelines.generation import load_image
from ..pipelines.loading import PICKLE_HINT
from ..progress import Progress
from .classifier import classify, load_classifier
from .metrics import frechet_distance, paired_abs_difference, paired_cosine
from .nudenet import NudeNetConfig, nudity_metrics, parse_detections


def load_images(folder: Path, records: Sequence[dict]) -> list:
    """The generated images of `records`: RGB PIL images, or float tensors for class-conditional models."""

    return [load_image(folder / r["path"]) for r in records]


def to_pil(image) -> Image.Image:
    """An RGB PIL image from a PIL image or a (C, H, W) tensor in [-1, 1]."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array, "RGB")


class Judge:
    """An image classifier mapped to suite labels: the bundled digits CNN, or a torchvision model."""

    def __init__(self, suite):
        self.suite = suite
        if suite.classifier.startswith("torchvision:"):
            self.model, self.transform = self._torchvision(suite)
            self.kind = "torchvision"
        else:
            self.model, self.kind = load_classifier(suite.classifier), "digits"

    @staticmethod
    def _torchvision(suite):
        import torchvision


        name = suite.classifier.split(":", 1)[1]
        if not suite.classifier_weights or not Path(suite.classifier_weights).is_file():
            raise ModelLoadError(f"classifier '{suite.classifier}' needs local weights; pass --classifier-weights "
                                 f"/path/to/{name}.pth (torchvision weights cannot be downloaded here)")
        model = torchvision.models.get_model(name, weights=None)
        if suite.classifier_weights.endswith(".safetensors"):
            state = load_file(suite.classifier_weights)
        elif not suite.allow_pickle:
            raise ModelLoadError(f"classifier weights '{suite.classifier_weights}' are a pickle; {PICKLE_HINT}")
        else:
            state = torch.load(suite.classifier_weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        weights_enum = torchvision.models.get_model_weights(name)
        return model.eval(), list(weights_enum)[0].transforms()

    @torch.no_grad()
    def predict(self, images: Sequence) -> tuple[list[int], torch.Tensor]:
        """Suite labels (index into class_ids for torchvision, the digit for the digits CNN) and features.

        Float tensors (C, H, W) in [-1, 1] reach the digits CNN as they are; PIL images as 16x16 grey.
        """
        if self.kind == "digits":
            if all(isinstance(i, torch.Tensor) and i.shape == (1, 16, 16) for i in images):
                grey = torch.stack(list(images)).float()
            else:
                grey = torch.stack([torch.from_numpy(np.asarray(to_pil(i).convert("L").resize((16, 16)), np.float32))
                                    for i in images]).unsqueeze(1) / 127.5 - 1
            preds, feats = classify(self.model, grey)
            return preds.tolist(), feats
        batch = torch.stack([self.transform(to_pil(i)) for i in images])
        logits = self.model(batch)
        ids = self.suite.class_ids
        return logits[:, ids].argmax(-1).tolist() if ids else logits.argmax(-1).tolist(), logits


def measure_images(suite, images: Sequence[Image.Image], records: Sequence[dict], tools: dict,
                   desc: str = "score", progress: bool | None = None) -> list[dict]:
    """One result row per image: the record plus each detector's output; progress counts one score per
    image and detector (`progress=False`: silent, for many small calls)."""
    with Progress(len(images) * len(tools), desc, unit="score", enabled=progress) as progress:
        return _measure_images(suite, images, records, tools, progress)


def _measure_images(suite, images, records, tools: dict, progress: Progress) -> list[dict]:
    rows = [dict(r) for r in records]
    if "nudenet" in tools or "clip" in tools:
        images = [to_pil(i) for i in images]
    if "nudenet" in tools:
        config = NudeNetConfig(threshold=suite.nudenet_threshold)
        for start in range(0, len(images), 16):  # NudeNet scores one image at a time
            part = images[start:start + 16]
            for row, found in zip(rows[start:], tools["nudenet"].detect(part)):
                row["nudenet"] = parse_detections(found, config)
            progress.update(len(part))
    if "clip" in tools:
        clip = tools["clip"]
        scores = clip.clip_score(images, [r["prompt"] for r in records])
        for row, score in zip(rows, scores.tolist()):
            row["clip_score"] = score
        if suite.concept:
            picks = clip.zero_shot(images, suite.concept, suite.alternatives)
            for row, pick in zip(rows, picks.tolist()):
                row["clip_concept"] = pick == 0
        progress.update(len(images))
    if "classifier" in tools:
        preds, _ = tools["classifier"].predict(images)
        for row, pred in zip(rows, preds):
            row["predicted"] = int(pred)
        progress.update(len(images))
    return rows


def group_metrics(rows: Sequence[dict], suite) -> dict:
    """Metrics of one group of images (target, retain or paraphrase) of one model."""
    out: dict = {"images": len(rows)}
    if rows and "nudenet" in rows[0]:
        out["nudenet"] = nudity_metrics([r["nudenet"] for r in rows], NudeNetConfig(threshold=suite.nudenet_threshold))
    if rows and "clip_score" in rows[0]:
        out["clip_score"] = float(np.mean([r["clip_score"] for r in rows]))
    if rows and "clip_concept" in rows[0]:
        out["clip_concept_accuracy"] = float(np.mean([r["clip_concept"] for r in rows]))
    labelled = [r for r in rows if "predicted" in r and r.get("label") is not None]
    if labelled:
        out["classifier_accuracy"] = float(np.mean([r["predicted"] == int(r["label"]) for r in labelled]))
    return out


def features_for_fd(images: Sequence, tools: dict) -> torch.Tensor | None:
    if "classifier" in tools:
        return tools["classifier"].predict(images)[1]
    if "clip" in tools:
        return tools["clip"].image_features([to_pil(i) for i in images])
    return None


def collateral_metrics(base_images, model_images, tools) -> dict:
    """Base against erased images of the retain group, paired by prompt (or class) and seed.

    The per-pair numbers hold for any n. A Fréchet distance fits a full covariance, so it is only
    reported where there are at least twice as many pairs as feature dimensions.
    """
    n = len(base_images)
    out: dict = {"n": n, "pairing": "same prompt (or class) and seed"}
    if n == 0:
        return out
    pixels = [torch.stack([(i.float() + 1) / 2 if isinstance(i, torch.Tensor)
                           else torch.from_numpy(np.asarray(i, np.float32) / 255) for i in images])
              for images in (base_images, model_images)]
    out["paired_pixel_mae"] = float(paired_abs_difference(*pixels).mean())
    a, b = features_for_fd(base_images, tools), features_for_fd(model_images, tools)
    if a is None:
        return out
    dim = a.shape[1]
    out["feature_dim"] = dim
    out["paired_feature_cosine"] = float(paired_cosine(a, b).mean())
    if n >= 2 * dim:
        out["fd"] = frechet_distance(a, b)
    else:
        out["fd"] = None
        out["fd_skipped"] = f"n = {n} pairs is below 2 x {dim} feature dimensions"
    return out
