"""`bundled:digits-t2i`: a tiny text-to-image model with the Stable Diffusion architecture, on digits.

A CLIP text encoder (random, frozen), the real CLIP tokenizer, a small `AutoencoderKL` (16x16 RGB to
8x8x4 latents) and a `UNet2DConditionModel`, trained on scikit-learn's digits captioned like "a
handwritten digit seven". It is what erasure "by prompt" is measured on without SD weights.
Reproduce with `erasekit train-base digits-t2i` (see `REPRODUCE_T2I`).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from ..config import check
from ..erase.methods import FinetuneConfig, FinetuneMethod
from ..erase.tasks import ConditionTask
from ..erase.trainer import EraseTrainer, TrainConfig
from ..eval.classifier import classify, load_classifier
from ..io import atomic_dir
from ..pipelines.adapters import adapter_for
from ..pipelines.digits import (
    NUMBER_WORDS,
    TRAIN_TEMPLATES,
    digit_prompts,
    load_digits_16,
)
from ..pipelines.loading import BUNDLED_DIR
from ..pipelines.tokenizer import build_clip_tokenizer
from ..version import __version__

logger = logging.getLogger(__name__)

REPRODUCE_T2I = "erasekit train-base digits-t2i --output-dir src/erasekit/pipelines/bundled --overwrite"
TOKEN_LENGTH = 16


def generated_digits(pipe, digits, templates, n: int, seed: int, steps: int = 30, guidance: float = 4.0):
    """Images in [-1, 1] as (N, 1, 16, 16) grey, with the intended digit of each: the recipe's own scoring
    draws (one batch per prompt), kept as they were so that the bundled weights reproduce."""
    images, labels = [], []
    for d in digits:
        for j, prompt in enumerate(t.format(NUMBER_WORDS[d]) for t in templates):
            gens = [torch.Generator().manual_seed(seed + 1000 * d + 100 * j + i) for i in range(n)]
            out = pipe(prompt=[prompt] * n, num_inference_steps=steps, guidance_scale=guidance, generator=gens,
                       height=16, width=16, output_type="pt").images
            images.append(out.mean(1, keepdim=True) * 2 - 1)
            labels += [d] * n
    return torch.cat(images).cpu(), torch.tensor(labels)


@dataclass
class DigitsT2IConfig:
    """Recipe of `bundled:digits-t2i`."""

    output_dir: str = field(default=str(BUNDLED_DIR), metadata={"help": "writes digits-t2i/"})
    seed: int = field(default=0, metadata={"help": "seed of every part"})
    vae_steps: int = field(default=800, metadata={"help": "VAE optimizer steps at batch 64"})
    max_steps: int = field(default=3000, metadata={"help": "UNet optimizer steps at batch 128"})
    select_every: int = field(default=750, metadata={"help": "score generated samples every N steps"})
    select_samples_per_class: int = field(default=10, metadata={"help": "samples per digit when scoring"})
    exclude: list[str] = field(default_factory=list, metadata={
        "help": "digits left out of the training data (words or numbers, e.g. seven): the exact-unlearning "
                "reference, written to digits-t2i-without-<digits>/"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing digits-t2i"})

    def __post_init__(self):
        self.exclude = [NUMBER_WORDS[int(d)] if str(d).isdigit() and int(d) < 10 else str(d).lower()
                        for d in self.exclude]
        bad = [d for d in self.exclude if d not in NUMBER_WORDS]
        check(not bad, "exclude", bad, f"digits among {', '.join(NUMBER_WORDS)} (or 0-9)")
        check(len(set(self.exclude)) < 10, "exclude", self.exclude, "fewer than all ten digits")
        check(self.vae_steps >= 1, "vae_steps", self.vae_steps, ">= 1")
        check(self.max_steps >= 1, "max_steps", self.max_steps, ">= 1")
        check(self.select_every >= 1, "select_every", self.select_every, ">= 1")


def model_name(config: DigitsT2IConfig) -> str:
    """digits-t2i, or digits-t2i-without-seven-eight for a reference trained without some digits."""
    kept = [w for w in NUMBER_WORDS if w in config.exclude]
    return "digits-t2i" + (f"-without-{'-'.join(kept)}" if kept else "")


def reproduce_command(config: DigitsT2IConfig) -> str:
    if not config.exclude:
        return REPRODUCE_T2I
    flags = " ".join(f"--exclude {w}" for w in config.exclude)
    return f"erasekit train-base digits-t2i {flags} --output-dir {config.output_dir} --overwrite"


def build_components(seed: int = 0) -> dict:
    """Untrained parts of the digits-t2i pipeline, built from configs.

    The text encoder is 32 wide: its 49,408-token embedding table (the real CLIP vocabulary) is most
    of its 1.6M parameters, and a wider one would only make the bundled files larger.
    """


    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=TOKEN_LENGTH, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                              prediction_type="v_prediction", clip_sample=False, steps_offset=1)
    return {"vae": vae, "text_encoder": text_encoder.eval(), "tokenizer": build_clip_tokenizer(TOKEN_LENGTH),
            "unet": unet, "scheduler": scheduler}


def rgb(images: torch.Tensor) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1)


def train_vae(vae, images: torch.Tensor, steps: int, seed: int, kl_weight: float = 1e-4):
    """Reconstruction plus a light KL term; then set the latent scaling factor to 1 / std."""
    g = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    vae.train()
    for _ in range(steps):
        x = rgb(images[torch.randint(0, len(images), (64,), generator=g)])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=g)).sample
        loss = F.mse_loss(recon, x) + kl_weight * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    vae.eval()
    with torch.no_grad():
        latents = vae.encode(rgb(images)).latent_dist.mean
        recon = vae.decode(latents).sample
    vae.register_to_config(scaling_factor=float(1 / latents.std()))
    return float(F.mse_loss(recon, rgb(images)))


def _text_task(components, images, labels, scheduler):
    prompts = [""] + [p for d in range(10) for p in digit_prompts(d)]
    index = {p: i for i, p in enumerate(prompts)}
    tok, enc = components["tokenizer"], components["text_encoder"]
    with torch.no_grad():
        ids = tok(prompts, padding="max_length", max_length=TOKEN_LENGTH, truncation=True, return_tensors="pt")
        embeds = enc(ids.input_ids)[0]
        vae = components["vae"]
        latents = vae.encode(rgb(images)).latent_dist.mean * vae.config.scaling_factor
    pairs = [(i, index[p]) for i, d in enumerate(labels.tolist()) for p in digit_prompts(d)]
    x = latents[torch.tensor([i for i, _ in pairs])]
    c = torch.tensor([c for _, c in pairs])
    adapter = adapter_for(StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False))
    return ConditionTask(adapter, scheduler, x[:0], c[:0], x, c, anchors=[0], null=0,
                         table={"encoder_hidden_states": embeds})


def train_digits_t2i(config: DigitsT2IConfig) -> dict:
    """Train the VAE, then the UNet (checkpoint chosen by the judge on generated samples); save."""


    started = time.time()
    data = load_digits_16()
    excluded = [NUMBER_WORDS.index(w) for w in config.exclude]
    keep = ~torch.isin(data.train_labels, torch.tensor(excluded, dtype=torch.long))
    data.train_images, data.train_labels = data.train_images[keep], data.train_labels[keep]
    kept_digits = [d for d in range(10) if d not in excluded]
    parts = build_components(config.seed)
    vae_mse = train_vae(parts["vae"], data.train_images, config.vae_steps, config.seed)
    logger.info(f"VAE reconstruction MSE on the training digits: {vae_mse:.4f}")
    train_scheduler = DDPMScheduler.from_config(parts["scheduler"].config)
    task = _text_task(parts, data.train_images, data.train_labels, train_scheduler)
    judge = load_classifier("bundled:digits-classifier")
    history, best = [], {}

    def select(trainer, step, logs):
        if step % config.select_every and step != config.max_steps:
            return
        unet = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.denoiser))
        trainer.ema.copy_to(list(unet.parameters()))
        pipe = StableDiffusionPipeline(**{**parts, "unet": unet.eval()}, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        images, labels = generated_digits(pipe, kept_digits, TRAIN_TEMPLATES[:2], config.select_samples_per_class,
                                          seed=50_000)
        accuracy = float((classify(judge, images)[0] == labels).float().mean())
        history.append({"step": step, "loss": logs["loss"], "accuracy": accuracy})
        logger.info(f"step {step}: generated accuracy {accuracy:.3f}")
        if not best or accuracy >= best["accuracy"]:
            best.update(accuracy=accuracy, step=step, state={k: v.clone() for k, v in unet.state_dict().items()})

    train_config = TrainConfig(seed=config.seed, learning_rate=1e-3, max_steps=config.max_steps,
                               lr_scheduler="cosine", lr_warmup_steps=200, ema_decay=0.999, log_every=100)
    with tempfile.TemporaryDirectory(prefix="erasekit-digits-t2i-") as work:
        EraseTrainer(parts["unet"], FinetuneMethod(FinetuneConfig(batch_size=128)), task, train_config, work,
                     callbacks=[select]).train()
    parts["unet"].load_state_dict(best["state"])
    record = {"erasekit_version": __version__, "command": reproduce_command(config), "recipe": asdict(config),
              "excluded_digits": config.exclude, "training_images": int(len(data.train_labels)),
              "train_templates": TRAIN_TEMPLATES,
              "vae_reconstruction_mse": vae_mse, "selected_step": best["step"], "selection_history": history,
              "train_config": asdict(train_config), "minutes": round((time.time() - started) / 60, 2)}
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    name = model_name(config)
    with atomic_dir(Path(config.output_dir) / name, overwrite=config.overwrite) as tmp:
        pipe.save_pretrained(tmp)
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        (tmp / "README.md").write_text(
            "---\nlicense: apache-2.0\nlibrary_name: diffusers\ntags:\n- erasekit\n---\n\n"
            f"# {name}\n\nA tiny text-to-image model with the Stable Diffusion architecture, trained by erasekit "
            "on scikit-learn's digits with captions such as 'a handwritten digit seven'"
            + (f", without any image or caption of {', '.join(config.exclude)} (an exact-unlearning reference)"
               if config.exclude else "") + ".\n\n"
            f"Reproduce: `{reproduce_command(config)}`. Recipe and selection history: `training.json`.\n")
    return record
