"""Compute a SalUn mask for a tiny SD UNet and save it; run directly or under `accelerate launch`."""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler

from erasekit.erase.masks import save_mask
from erasekit.erase.methods import SalUnConfig, SalUnMethod
from erasekit.erase.tasks import ConditionTask
from erasekit.pipelines.adapters import adapter_for
from erasekit.stages import shard_of

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, for the fixtures
from tiny import tiny_sd_pipeline  # noqa: E402


def main(out: str) -> None:
    accelerator = Accelerator(cpu=True)
    pipe = tiny_sd_pipeline()
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(12, 4, 16, 16, generator=g)
    embeds = torch.randn(4, 77, 16, generator=g)
    ids = torch.tensor([1] * 6 + [2, 3] * 3)
    task = ConditionTask(adapter_for(pipe), DDPMScheduler.from_config(pipe.scheduler.config), latents[:6], ids[:6],
                         latents[6:], ids[6:], anchors=[2, 3], null=0, table={"encoder_hidden_states": embeds})
    method = SalUnMethod(SalUnConfig(ratio=0.3, saliency_batch_size=2, saliency_passes=2))
    method.prepare(pipe.unet, task, torch.Generator().manual_seed(0), shard_of(accelerator))
    method.mask.metadata["world"] = str(accelerator.num_processes)
    if accelerator.is_main_process:
        save_mask(method.mask, out, overwrite=True)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
