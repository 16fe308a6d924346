"""SD-1.5-size erase-step throughput, peak memory, delta size and generation throughput.

The UNet, VAE and text encoder are built from SD-1.5-shaped configs with random weights (no
download). The erase step is the real one: SalUn's mask, then `EraseTrainer` with bf16 autocast,
fp32 master weights and masked AdamW, on random latents (batch 4 forget + 4 retain, 64x64
latents = 512 px). Run on a CUDA machine:

    python benchmarks/bench_sd_gpu.py --out benchmarks/results/sd15-gpu.json
    python benchmarks/bench_sd_gpu.py --tiny      # a seconds-long smoke run on CPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

SD15_UNET = dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                 attention_head_dim=8, layers_per_block=2)
TINY_UNET = dict(sample_size=8, block_out_channels=(8, 16), cross_attention_dim=16, attention_head_dim=4,
                 layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))


def build_unet(config, device):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        return UNet2DConditionModel(**config)


def build_task(config, n: int = 16):
    from diffusers import DDPMScheduler

    from erasekit.erase.tasks import ConditionTask
    from erasekit.pipelines.adapters.stable_diffusion import StableDiffusionAdapter

    g = torch.Generator().manual_seed(0)
    size = config["sample_size"]
    latents = torch.randn(2 * n, 4, size, size, generator=g)
    embeds = torch.randn(4, 77, config["cross_attention_dim"], generator=g)
    ids = torch.randint(1, 4, (2 * n,), generator=g)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    # Only prediction and noising are used, so the adapter needs no pipeline around the bare UNet.
    return ConditionTask(StableDiffusionAdapter(None), scheduler, latents[:n], ids[:n], latents[n:], ids[n:],
                         anchors=[2, 3], null=0, table={"encoder_hidden_states": embeds})


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def erase_run(config, device, checkpointing: bool, steps: int, warmup: int, batch: int) -> dict:
    from accelerate.state import AcceleratorState

    from erasekit.erase.methods import SalUnConfig, SalUnMethod
    from erasekit.erase.trainer import EraseTrainer, TrainConfig
    from erasekit.pipelines.delta import save_delta

    AcceleratorState._reset_state(reset_partial_state=True)
    unet = build_unet(config, device)
    base_state = {k: v.detach().to("cpu", copy=True) for k, v in unet.state_dict().items()}
    if checkpointing:
        unet.enable_gradient_checkpointing()
    task = build_task(config)
    method = SalUnMethod(SalUnConfig(ratio=0.5, batch_size=batch, saliency_batch_size=batch, saliency_passes=1))
    sync(device)
    if device == "cuda":  # the peak covers saliency too: its float64 sums live on the host
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    method.prepare(unet, task, torch.Generator().manual_seed(0))
    sync(device)
    saliency_s = time.perf_counter() - start
    saliency_peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    stamps = []

    def clock(trainer, step, logs):
        sync(device)
        stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as work:
        config_t = TrainConfig(max_steps=warmup + steps, mixed_precision="bf16" if device == "cuda" else "no",
                               learning_rate=1e-5, log_every=1000)
        trainer = EraseTrainer(unet, method, task, config_t, work, callbacks=[clock])
        trainer.train()
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    timed = stamps[warmup:]
    step_s = (timed[-1] - stamps[warmup - 1]) / len(timed)
    result = {"gradient_checkpointing": checkpointing, "batch_forget": batch, "batch_retain": batch,
              "steps_timed": len(timed), "seconds_per_step": round(step_s, 4), "steps_per_s": round(1 / step_s, 3),
              "peak_gpu_memory_gib": round(peak / 2**30, 2), "saliency_seconds": round(saliency_s, 2),
              "saliency_peak_gpu_memory_gib": round(saliency_peak / 2**30, 2),
              "mask_selected": method.mask.selected, "mask_total": method.mask.total}
    if not checkpointing:
        base = type(unet).from_config(unet.config)
        base.load_state_dict(base_state)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "delta.safetensors"
            save_delta(path, base, trainer.denoiser.to("cpu"), method.mask.masks)
            unet_bytes = sum(v.numel() * v.element_size() for v in base_state.values())
            result.update(delta_bytes=path.stat().st_size, unet_bytes=unet_bytes,
                          delta_fraction_of_unet=round(path.stat().st_size / unet_bytes, 4))
    del trainer, unet
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def sd15_vae_and_text_encoder(device):
    """SD-1.5-shaped VAE and CLIP text encoder with random weights."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
                            sample_size=512)
        text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                            num_attention_heads=12, max_position_embeddings=77))
    return vae, text


def generation_run(device, batch: int, steps: int) -> dict:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    dtype = torch.bfloat16
    vae, text = sd15_vae_and_text_encoder(device)
    unet = build_unet(SD15_UNET, device)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=None, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(batch, 77, 768, generator=g).to(device, dtype)
    kwargs = dict(prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), num_inference_steps=steps,
                  guidance_scale=7.5, height=512, width=512, output_type="np")
    pipe(**{**kwargs, "num_inference_steps": 2})
    sync(device)
    start = time.perf_counter()
    pipe(**kwargs)
    sync(device)
    seconds = time.perf_counter() - start
    return {"batch": batch, "steps": steps, "resolution": 512, "dtype": "bf16", "seconds": round(seconds, 2),
            "images_per_s": round(batch / seconds, 3)}


def eval_generation_run(device, batch: int, images: int, tokenizer_dir: str) -> dict:
    """SD-1.5-size generation through the eval's path: prompts, per-image seeds, PNG + manifest."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from erasekit.pipelines.generation import GenerationRecord, generate_to_folder

    vae, text = sd15_vae_and_text_encoder(device)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
                                   unet=build_unet(SD15_UNET, device), safety_checker=None, feature_extractor=None,
                                   scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, clip_sample=False,
                                                           beta_schedule="scaled_linear"),
                                   requires_safety_checker=False)
    pipe.to(device, torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    records = [GenerationRecord(prompt="a photo of a church", seed=i, guidance=7.5, steps=30, path=f"{i}.png")
               for i in range(images)]
    with tempfile.TemporaryDirectory() as warm:
        generate_to_folder(pipe, records[:1], warm, 1, 512, 512)
    with tempfile.TemporaryDirectory() as folder:
        sync(device)
        start = time.perf_counter()
        generate_to_folder(pipe, records, folder, batch, 512, 512)
        sync(device)
        seconds = time.perf_counter() - start
    return {"path": "erasekit eval (generate_to_folder)", "batch": batch, "images": images, "steps": 30,
            "resolution": 512, "dtype": "bf16", "seconds": round(seconds, 2), "images_per_s": round(images / seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="tiny UNet on CPU, to check the script")
    parser.add_argument("--out", help="JSON file for the results")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--eval-only", action="store_true", help="only the eval-path generation throughput")
    parser.add_argument("--tokenizer", help="local CLIPTokenizer directory (for --eval-only)")
    args = parser.parse_args()
    if args.eval_only:
        device = "cuda"
        rows = [eval_generation_run(device, batch, 16, args.tokenizer) for batch in (1, 4, 8)]
        for row in rows:
            print(json.dumps(row), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                                  "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")
        return
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    config = TINY_UNET if args.tiny else SD15_UNET
    results = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d"), "unet": "tiny" if args.tiny else "SD-1.5 config, random weights",
               "erase": [], "generation": []}
    for checkpointing in (False, True):
        row = erase_run(config, device, checkpointing, steps=args.steps, warmup=3, batch=4)
        results["erase"].append(row)
        print(json.dumps(row), flush=True)
    if not args.tiny:
        for batch in (1, 4):
            row = generation_run(device, batch, steps=30)
            results["generation"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
