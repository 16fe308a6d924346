"""The digits CNN judge: a small classifier that labels generated digits and gives features for FD."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..errors import ModelLoadError
from ..io import atomic_dir
from ..pipelines.loading import resolve_model_path

CLASSIFIER_WEIGHTS = "model.safetensors"
CLASSIFIER_CONFIG = "config.json"


class DigitsCNN(nn.Module):
    """Three conv layers and two dense layers over 1x16x16 images in [-1, 1] (about 160k parameters)."""

    def __init__(self, num_classes: int = 10, width: int = 32, feature_dim: int = 64):
        super().__init__()
        self.config = {"num_classes": num_classes, "width": width, "feature_dim": feature_dim}
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 4 * 4, feature_dim)
        self.fc2 = nn.Linear(feature_dim, num_classes)
        self.dropout = nn.Dropout(0.3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.features(x)))


def train_digits_classifier(
    images: torch.Tensor, labels: torch.Tensor, epochs: int = 30, seed: int = 0, batch_size: int = 64
) -> DigitsCNN:
    """Train the judge with light shift augmentation, so it also reads slightly off-centre samples."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitsCNN(num_classes=int(labels.max()) + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=2e-3, total_steps=epochs * ((len(labels) + batch_size - 1) // batch_size)
    )
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), batch_size):
            idx = order[start : start + batch_size]
            shift = torch.randint(-1, 2, (2,), generator=generator).tolist()
            x = torch.roll(images[idx], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(x), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def classify(model: DigitsCNN, images: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted labels and penultimate features for images in [-1, 1] of shape (N, 1, 16, 16)."""
    model.eval()
    preds, feats = [], []
    for start in range(0, len(images), batch_size):
        f = model.features(images[start : start + batch_size].float())
        feats.append(f)
        preds.append(model.fc2(f).argmax(-1))
    return torch.cat(preds), torch.cat(feats)


def save_classifier(model: DigitsCNN, path: str | os.PathLike, extra: dict | None = None, overwrite: bool = False):
    with atomic_dir(path, overwrite) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / CLASSIFIER_WEIGHTS)
        (tmp / CLASSIFIER_CONFIG).write_text(json.dumps({**model.config, **(extra or {})}, indent=2) + "\n")


def load_classifier(path: str | os.PathLike) -> DigitsCNN:
    """Load a classifier directory (`config.json` + `model.safetensors`) or `bundled:digits-classifier`."""

    path = Path(resolve_model_path(path))
    if not (path / CLASSIFIER_WEIGHTS).is_file() or not (path / CLASSIFIER_CONFIG).is_file():
        raise ModelLoadError(
            f"classifier '{path}' must be a directory with {CLASSIFIER_CONFIG} and {CLASSIFIER_WEIGHTS}"
        )
    config = json.loads((path / CLASSIFIER_CONFIG).read_text())
    model = DigitsCNN(**{k: config[k] for k in ("num_classes", "width", "feature_dim")})
    model.load_state_dict(load_file(path / CLASSIFIER_WEIGHTS))
    return model.eval()
