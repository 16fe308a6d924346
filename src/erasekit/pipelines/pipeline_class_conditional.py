"""Class-conditional diffusion pipeline with classifier-free guidance over a diffusers `UNet2DModel`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor


def null_label(unet: UNet2DModel) -> int:
    """The label reserved for the unconditional branch: the last class embedding."""
    return int(unet.config.num_class_embeds) - 1


def num_classes(unet: UNet2DModel) -> int:
    return null_label(unet)


def guided_prediction(
    unet: UNet2DModel, sample: torch.Tensor, timestep: torch.Tensor, labels: torch.Tensor, guidance_scale: float
) -> torch.Tensor:
    """CFG prediction `u + g (c - u)`, with both halves in one batched UNet call.

    `guidance_scale` follows diffusers' convention (1 = no guidance). SalUn's `w` is `g - 1`.
    """
    if guidance_scale == 1.0:
        return unet(sample, timestep, class_labels=labels).sample
    null = torch.full_like(labels, null_label(unet))
    timestep = timestep.expand(sample.shape[0]) if timestep.ndim == 0 else timestep
    out = unet(torch.cat([sample, sample]), torch.cat([timestep, timestep]), class_labels=torch.cat([labels, null]))
    cond, uncond = out.sample.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


class ClassConditionalPipeline(DiffusionPipeline):
    """Generate images for class labels with classifier-free guidance.

    The UNet has `num_classes + 1` class embeddings; the last one is the null label.

    Args:
        unet: a `UNet2DModel` built with `num_class_embeds`.
        scheduler: any diffusers scheduler (DDPM, DDIM, DPM-Solver, ...).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def num_classes(self) -> int:
        return num_classes(self.unet)

    def _labels(self, class_labels: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor([class_labels] if isinstance(class_labels, int) else class_labels)
        labels = labels.to(device=self.device, dtype=torch.long).flatten()
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.numel():
            raise ValueError(
                f"class label {int(bad[0])} is out of range; this model has classes 0..{self.num_classes - 1}"
            )
        return labels

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | Sequence[int] | torch.Tensor,
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Sample one image per entry of `class_labels`.

        Args:
            class_labels: class ids in `0..num_classes-1`.
            num_inference_steps: scheduler steps.
            guidance_scale: CFG scale `g` in `u + g (c - u)`; 1 disables guidance.
            generator: a generator, or one per sample so that each image is independent of the batch.
            latents: optional starting noise of shape (B, C, H, W).
            output_type: "pil", "np" (B, H, W, C in [0, 1]), "pt" (B, C, H, W in [0, 1]) or "latent" (raw).
            callback_on_step_end: called as `fn(pipe, i, t, {"latents": x})`; may return new latents.
        """
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
        labels = self._labels(class_labels)
        cfg = self.unet.config
        shape = (labels.shape[0], cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
        latents = latents.to(self.device, self.unet.dtype) * self.scheduler.init_noise_sigma

        step_params = inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if "generator" in step_params else {}
        if "use_clipped_model_output" in step_params:
            # With clip_sample on, DDIM must re-derive eps from the clipped x0, or CFG drifts to textures.
            step_kwargs["use_clipped_model_output"] = True

        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_input = self.scheduler.scale_model_input(latents, t)
            pred = guided_prediction(self.unet, model_input, t.to(self.device), labels, guidance_scale)
            latents = self.scheduler.step(pred, t, latents, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                latents = callback_on_step_end(self, i, t, {"latents": latents}).get("latents", latents)

        if output_type == "latent":
            images = latents
        else:
            images = (latents.float() / 2 + 0.5).clamp(0, 1)
            if output_type == "np" or output_type == "pil":
                images = images.cpu().permute(0, 2, 3, 1).numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def per_sample_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One generator per sample, so an image depends on its seed only, never on the batch it is in."""
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
    return (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
