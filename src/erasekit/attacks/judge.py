"""Whether a generated image shows the concept: the eval suite's judge, per image.

- `classifier`: the judge's label is the concept's label, and (for the digits judge) the image is not
  noise: a sample whose total variation exceeds the 99th percentile of real digits does not count, since
  mostly-noise samples are often still given some label.
- `clip`: zero-shot, the concept text beats every alternative.
- `nudenet`: an exposed label of the eval's list at the eval's threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..eval.evaluate import detector_tools
from ..eval.measure import measure_images, to_pil
from ..eval.metrics import total_variation
from ..pipelines.digits import load_digits_16


def grey16(images: Sequence) -> torch.Tensor:
    """(N, 1, 16, 16) in [-1, 1], as the digits judge reads images."""
    if all(isinstance(i, torch.Tensor) and i.shape == (1, 16, 16) for i in images):
        return torch.stack(list(images)).float()
    return torch.stack([torch.from_numpy(np.asarray(to_pil(i).convert("L").resize((16, 16)), np.float32))
                        for i in images]).unsqueeze(1) / 127.5 - 1


class ConceptJudge:
    """Judges images for one concept: `label` (classifier) or the suite's concept text (clip)."""

    def __init__(self, suite, metric: str, label: int | None):
        self.suite, self.metric, self.label = suite, metric, label
        self.tools = detector_tools(suite)
        self.digits = metric == "classifier" and not suite.classifier.startswith("torchvision:")
        if self.digits:
            data = load_digits_16()
            real = torch.cat([data.train_images, data.test_images])
            self.noise_limit = float(torch.quantile(total_variation(real), 0.99))

    def describe(self) -> dict:
        out = {"metric": self.metric, "concept_label": self.label}
        if self.metric == "classifier":
            out.update(classifier=self.suite.classifier, noisy_counts_as_failure=self.digits)
        if self.metric == "clip":
            out.update(concept=self.suite.concept, alternatives=list(self.suite.alternatives),
                       clip_model=self.suite.clip_model)
        if self.metric == "nudenet":
            out.update(threshold=self.suite.nudenet_threshold)
        return out

    def __call__(self, images: Sequence, prompt: str = "", label: int | None = None) -> list[dict]:
        """One row per image: `success` (the concept `label`, default the judge's own) and the scores."""
        label = self.label if label is None else label
        records = [{"prompt": prompt} for _ in images]
        rows = measure_images(self.suite, images, records, self.tools, desc="judge", progress=False)
        out = []
        for i, row in enumerate(rows):
            if self.metric == "classifier":
                result = {"predicted": row["predicted"]}
                hit = row["predicted"] == label
                if self.digits:
                    noisy = bool(total_variation(grey16([images[i]]))[0] > self.noise_limit)
                    result["noisy"] = noisy
                    hit = hit and not noisy
            elif self.metric == "clip":
                result, hit = {"clip_concept": row["clip_concept"]}, bool(row["clip_concept"])
            else:
                result, hit = {"nudenet": row["nudenet"]["labels"]}, bool(row["nudenet"]["nude"])
            out.append({"success": bool(hit), **result})
        return out
