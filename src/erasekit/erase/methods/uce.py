"""UCE (Gandikota et al., WACV 2024, "Unified Concept Editing"): a closed-form, training-free edit of the
cross-attention key and value projections.

For each projection `W` (out x in) of the text embeddings, with erased embeddings `c_i`, their targets
`c*_i` (the anchor prompt's embedding at the same token position) and preserved embeddings `c_j`:

    W' = (sum_i W c*_i c_i^T + s sum_j W c_j c_j^T + lam W) (sum_i c_i c_i^T + s sum_j c_j c_j^T + lam I)^-1

the minimiser of `sum_i |W' c_i - W c*_i|^2 + s sum_j |W' c_j - W c_j|^2 + lam |W' - W|_F^2`. Every token
position of a prompt's encoder output is one embedding (CLIP is causal, so positions after the concept's
tokens carry it too); the empty prompt (CFG's unconditional branch) is always preserved.

`rece_rounds` > 0 re-erases what the edit still answers to, as RECE does (Gong et al., ECCV 2024): after an
edit, each erased embedding `c` gets the embedding `c'` that the *edited* projections map closest to what
the original ones made of `c`, in closed form over every edited projection,

    c' = (sum_W W'^T W' + mu I)^-1 (sum_W W'^T W) c,

and `c'` joins the erased embeddings (with `c`'s target) before the next edit from the original weights.
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
    rece_rounds: int = field(default=0, metadata={
        "help": "RECE re-erasure rounds: the embeddings the edited projections still map to the concept are found in "
                "closed form and erased too (0: UCE as published)"})
    rece_mu: float = field(default=0.1, metadata={"help": "RECE's regulariser of the found embeddings' norm"})

    def __post_init__(self):
        check(self.preserve_scale >= 0, "preserve_scale", self.preserve_scale, ">= 0")
        check(self.lamb > 0, "lamb", self.lamb, "> 0 (it keeps the system solvable)")
        check(isinstance(self.rece_rounds, int) and self.rece_rounds >= 0, "rece_rounds", self.rece_rounds,
              "an integer >= 0")
        check(self.rece_mu > 0, "rece_mu", self.rece_mu, "> 0")


def uce_solve(weight: torch.Tensor, erase: torch.Tensor, targets: torch.Tensor, preserve: torch.Tensor,
              preserve_scale: float, lamb: float) -> torch.Tensor:
    """The UCE update of one projection; embeddings are rows (n, in). Solved in float64."""
    w = weight.double()
    c, c_star, p = erase.double(), targets.double(), preserve.double()
    lhs = w @ c_star.T @ c + preserve_scale * (w @ p.T @ p) + lamb * w
    gram = c.T @ c + preserve_scale * (p.T @ p) + lamb * torch.eye(w.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, lhs.T).T.to(weight.dtype)  # gram is symmetric


def rece_embeddings(edited: list[torch.Tensor], original: list[torch.Tensor], erase: torch.Tensor,
                    mu: float) -> torch.Tensor:
    """For each erased embedding c (a row of `erase`), the c' minimising `sum_W |W' c' - W c|^2 + mu |c'|^2`
    over the projection pairs (`edited` W', `original` W): the input the edited model still reads as c
    (Gong et al. 2024, Eq. 6). Solved in float64."""
    dim = erase.shape[1]
    a = mu * torch.eye(dim, dtype=torch.float64)
    b = torch.zeros(dim, dim, dtype=torch.float64)
    for w_new, w_old in zip(edited, original):
        a += w_new.double().T @ w_new.double()
        b += w_new.double().T @ w_old.double()
    return torch.linalg.solve(a, b @ erase.double().T).T.to(erase.dtype)


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
        params = [p for name, p in denoiser.named_parameters() if KV_PROJECTIONS.search(name)]
        if not params:
            raise ConfigError("method 'uce' found no cross-attention projections (attn2.to_k/to_v) to edit")
        original = [p.detach().cpu().clone() for p in params]
        cfg, first = self.config, erase
        for round_ in range(cfg.rece_rounds + 1):
            edited = [uce_solve(w, erase, targets, preserve, cfg.preserve_scale, cfg.lamb) for w in original]
            if round_ < cfg.rece_rounds:  # erase what the edit still reads as the concept, with the same targets
                erase = torch.cat([erase, rece_embeddings(edited, original, first, cfg.rece_mu)])
                targets = torch.cat([targets, targets[:len(first)]])
        with torch.no_grad():
            for param, weight in zip(params, edited):
                param.copy_(weight.to(param.device))
        return {"edited_projections": len(params), "erased_embeddings": len(erase),
                "preserved_embeddings": len(preserve), "rece_embeddings": len(erase) - len(first)}


register_method("uce", config_cls=UCEConfig, method_cls=UCEMethod,
                description="closed-form edit of the cross-attention keys and values (UCE, Gandikota et al., WACV 2024)")
