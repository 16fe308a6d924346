"""Class-conditional `UNet2DModel` with a CFG null label (erasekit's `ClassConditionalPipeline`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...errors import ConfigError
from ..pipeline_class_conditional import null_label, per_sample_generators
from .base import Adapter


class ClassConditionalAdapter(Adapter):
    """Conditions are class labels; the model works in pixel space, so images are their own latents."""

    family = "class-conditional"
    image_suffix = ".npy"  # float32 as generated: judges see exactly what the sampler produced
    eval_defaults = {"num_inference_steps": 50, "guidance_scale": 3.0, "eval_batch_size": 250,
                     "metrics": ["classifier"], "grid_prompts": 10, "grid_seeds": 10}

    @property
    def num_classes(self) -> int:
        return null_label(self.denoiser)

    @property
    def null_label(self) -> int:
        return null_label(self.denoiser)

    def check_forget(self, forget: Sequence[int]) -> list[int]:
        """The sorted distinct labels of `forget`, refused when unknown, empty or every class."""
        n = self.num_classes
        bad = [c for c in forget if not 0 <= c < n]
        if bad:
            raise ConfigError(f"'forget' contains unknown class label {bad[0]}; this model has classes 0..{n - 1}")
        if not forget:
            raise ConfigError("'forget' is empty; name at least one class label to erase")
        if len(set(forget)) >= n:
            raise ConfigError("'forget' names every class; keep at least one class to retain")
        return sorted(set(forget))

    def default_resolution(self) -> int:
        return int(self.denoiser.config.sample_size)

    def sample_shape(self, resolution: int | None = None) -> tuple[int, int, int]:
        """Pixel space: the UNet's own channels and size."""
        size = resolution or self.default_resolution()
        return int(self.denoiser.config.in_channels), size, size

    def predict(self, denoiser, z_t, t, cond):
        return denoiser(z_t, t, class_labels=cond["class_labels"]).sample

    def encode_images(self, images: torch.Tensor, device, dtype) -> torch.Tensor:
        return images.float().cpu()

    def generate_records(self, records, height=None, width=None, dtype=None) -> list[torch.Tensor]:
        """Images (C, H, W) in [-1, 1] for records with a `class_id`; the size is the model's own."""
        if any(r.class_id is None for r in records):
            raise ConfigError("a class-conditional model generates from class labels, not prompts; "
                              "give classes (forget, samples_per_class) instead of prompts")
        out = self.generate_labels([r.class_id for r in records], [r.seed for r in records], records[0].steps,
                                   records[0].guidance)
        return list((out.cpu() * 2 - 1).unbind(0))

    def generate_labels(self, labels: Sequence[int], seeds: Sequence[int], steps: int, guidance: float,
                        output_type: str = "pt") -> torch.Tensor:
        """One image per (label, seed); each image's noise depends only on its seed."""
        with torch.no_grad():
            return self.pipe(list(labels), num_inference_steps=steps, guidance_scale=guidance,
                             generator=per_sample_generators(list(seeds)), output_type=output_type).images
