"""UCE (Gandikota et al., WACV 2024, "Unified Concept Editing"): a closed-form, training-free edit of the
cross-attention key and value projections.

For each projection `W` (out x in) of the text embeddings, with erased embeddings `c_i`, their targets
`c*_i` (the anchor prompt's embedding at the same token position) and preserved embeddings `c_j`:

    W' = (sum_i W c*_i c_i^T + s sum_j W c_j c_j^T + lam W) (sum_i c_i c_i^T + s sum_j c_j c_j^T + lam I)^-1

the minimiser of `sum_i |W' c_i - W c*_i|^2 + s sum_j |W' c_j - W c_j|^2 + lam |W' - W|_F^2`. Every token
position of a prompt's encoder output is one embedding (CLIP is causal, so positions after the concept's
tokens carry it too); the empty prompt (CFG's unconditional branch) is always preserved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

from ...config import check
from ...errors import ConfigError
from ..registry import Method, register_method

KV_PROJECTIONS = re.compile(r"(^|\.)attn2\.to_[kv]\.weight$")


@dataclass
class UCEConfig:
    """UCE: closed-form edit of the cross-attention keys and values (no training, no images)."""

    preserve_scale: float = field(default=1.0, metadata={"help": "UCE's s: weight of the preserved (retain) prompts"})
    lamb: float = field(default=0.1, metadata={"help": "UCE's lambda: pull towards the original weights"})

    def __post_init__(self):
        check(self.preserve_scale >= 0, "preserve_scale", self.preserve_scale, ">= 0")
        check(self.lamb > 0, "lamb", self.lamb, "> 0 (it keeps the system solvable)")


def uce_solve(weight: torch.Tensor, erase: torch.Tensor, targets: torch.Tensor, preserve: torch.Tensor,
              preserve_scale: float, lamb: float) -> torch.Tensor:
    """The UCE update of one projection; embeddings are rows (n, in). Solved in float64."""
    w = weight.double()
    c, c_star, p = erase.double(), targets.double(), preserve.double()
    lhs = w @ c_star.T @ c + preserve_scale * (w @ p.T @ p) + lamb * w
    gram = c.T @ c + preserve_scale * (p.T @ p) + lamb * torch.eye(w.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, lhs.T).T.to(weight.dtype)  # gram is symmetric


class UCEMethod(Method):
    """Training-free: `edit` rewrites every `attn2.to_k` and `attn2.to_v` weight in closed form."""

    needs_images = False
    pipelines = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
    supported_models = "SD 1.x/2.x/XL (a UNet with text cross-attention)"

    def __init__(self, config: UCEConfig):
        self.config = config

    def trainable_parameters(self, denoiser, task) -> dict[str, torch.nn.Parameter]:
        return {}

    def edit(self, denoiser, task) -> dict[str, Any]:
        table = task.table or {}
        if "encoder_hidden_states" not in table or not task.prompt_ids:
            raise ConfigError("method 'uce' edits the cross-attention of a text-conditioned UNet (Stable Diffusion "
                              "1.x/2.x/XL); this model has no text cross-attention. Choose salun, rl, esd or ga")
        states = table["encoder_hidden_states"].float()
        ids = task.prompt_ids
        anchors = ids["anchor"]
        erase = torch.cat([states[i] for i in ids["forget"]])
        targets = torch.cat([states[anchors[k % len(anchors)]] for k in range(len(ids["forget"]))])
        preserve = torch.cat([states[i] for i in sorted({task.null, *ids["retain"]} - set(ids["forget"]))])
        edited = 0
        with torch.no_grad():
            for name, param in denoiser.named_parameters():
                if KV_PROJECTIONS.search(name):
                    param.copy_(uce_solve(param.detach().cpu(), erase, targets, preserve, self.config.preserve_scale,
                                          self.config.lamb).to(param.device))
                    edited += 1
        if not edited:
            raise ConfigError("method 'uce' found no cross-attention projections (attn2.to_k/to_v) to edit")
        return {"edited_projections": edited, "erased_embeddings": len(erase), "preserved_embeddings": len(preserve)}


register_method("uce", config_cls=UCEConfig, method_cls=UCEMethod,
                description="closed-form edit of the cross-attention keys and values (UCE, Gandikota et al., WACV 2024)")
