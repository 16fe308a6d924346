"""Embedding rows replaced by given vectors: the one hook behind an attack's learned token or label
embedding and an erasure's found conditions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch


@contextlib.contextmanager
def replaced_rows(layer: torch.nn.Module, slots: Callable[[torch.Tensor], torch.Tensor], vectors: torch.Tensor,
                  stand_in: int | None = None) -> Iterator[None]:
    """Inside, the embedding `layer` outputs `vectors[j]` for each input id whose `slots(ids)` is j >= 0
    (gradients flow through the vectors like any other input) and its own row for every other id. With
    `stand_in`, replaced ids reach the layer as that id (for ids past the end of its table)."""
    state = {}

    def before(module, args):
        ids = args[0]
        state["slot"] = slots(ids)
        if stand_in is None:
            return None
        return (torch.where(state["slot"] >= 0, torch.full_like(ids, stand_in), ids), *args[1:])

    def after(module, args, out):
        slot = state["slot"]
        chosen = vectors.to(out.device, out.dtype)[slot.clamp(min=0)]
        return torch.where((slot >= 0).unsqueeze(-1), chosen, out)

    handles = [layer.register_forward_pre_hook(before), layer.register_forward_hook(after)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
