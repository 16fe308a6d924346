"""scikit-learn's handwritten digits at 16x16, and the architecture of the bundled digits models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

IMAGE_SIZE = 16
NUM_DIGITS = 10
SPLIT_SEED = 0
TEST_FRACTION = 0.2

# The recipe measured best on this data (shared/FACTS.md): v-prediction on the cosine schedule.
DIGITS_UNET_CONFIG = dict(
    sample_size=IMAGE_SIZE,
    in_channels=1,
    out_channels=1,
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    attention_head_dim=16,
    num_class_embeds=NUM_DIGITS + 1,
)
DIGITS_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="v_prediction",
    clip_sample=True,
)


@dataclass
class DigitsSplit:
    """Images in [-1, 1] of shape (N, 1, 16, 16) and integer labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_digits_16(split_seed: int = SPLIT_SEED) -> DigitsSplit:
    """scikit-learn's 1,797 digits, bilinearly upsampled from 8x8 to 16x16, with a fixed stratified split."""

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1) * 2 - 1
    labels = torch.from_numpy(data.target.astype(np.int64))
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, random_state=split_seed, stratify=data.target
    )
    idx_train, idx_test = torch.from_numpy(np.sort(idx_train)), torch.from_numpy(np.sort(idx_test))
    return DigitsSplit(images[idx_train], labels[idx_train], images[idx_test], labels[idx_test])


def build_digits_unet(**overrides) -> UNet2DModel:
    return UNet2DModel(**{**DIGITS_UNET_CONFIG, **overrides})


def build_digits_schedulers() -> tuple[DDPMScheduler, DDIMScheduler]:
    """The training scheduler and the DDIM sampler saved with the pipeline."""
    train = DDPMScheduler(**DIGITS_SCHEDULER_CONFIG)
    return train, DDIMScheduler.from_config(train.config)


# Captions of the digits text-to-image model (bundled:digits-t2i).
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TRAIN_TEMPLATES = (
    "a handwritten digit {}",
    "the digit {}",
    "a drawing of the number {}",
    "handwritten {}",
    "a scan of a handwritten {}",
    "the number {} in ink",
)
# Never seen in training: used to test that erasure reaches paraphrases. The text encoder is random
# and frozen, so the base model follows some unseen phrasings and not others: probing ten candidates
# for "seven" and "three" (10 images each), these three were drawn as the digit 90-100% of the time,
# while e.g. "a picture of the numeral {}" and "an image of a {}" gave 0%. Erasure can only be
# measured on paraphrases the base model follows, so these are the held-out set.
HELD_OUT_TEMPLATES = ("the number {} written by hand", "a handwritten {}", "a {} written in ink")


def digit_prompts(digit: int, templates=TRAIN_TEMPLATES) -> list[str]:
    return [t.format(NUMBER_WORDS[digit]) for t in templates]
