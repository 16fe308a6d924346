"""Embeddings injected into a frozen model: placeholder words in every text encoder, or a label's row.

transformers 5's `CLIPTextModel.forward` takes no `inputs_embeds`, so vectors enter through hooks on
each encoder's input-embedding layer: the prompt carries `k` placeholder words (existing single-token
words, so the tokenizers, the position of the end token and the pooled outputs are the pipeline's own),
and the hook replaces those positions' embeddings. Inside `active()`, the pipeline itself (its
`encode_prompt`, its sampler) runs with the injected vectors, for training and for generation alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..errors import ConfigError
from ..pipelines.rows import replaced_rows

ENCODER_PAIRS = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"), ("tokenizer_3", "text_encoder_3"))


def text_encoders(pipe) -> dict[str, tuple]:
    """{encoder attribute: (tokenizer, encoder)} of every text encoder the pipeline has."""
    out = {}
    for tok_name, enc_name in ENCODER_PAIRS:
        tokenizer, encoder = getattr(pipe, tok_name, None), getattr(pipe, enc_name, None)
        if tokenizer is not None and encoder is not None:
            out[enc_name] = (tokenizer, encoder)
    return out


def single_token_id(tokenizer, word: str) -> int | None:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    return ids[0] if len(ids) == 1 else None


def check_context(pipe, k: int, prompt: str, key: str = "k") -> None:
    """Refuse `k` extra tokens that do not fit beside `prompt` in every tokenizer's context."""
    for tokenizer, _ in text_encoders(pipe).values():
        limit = getattr(tokenizer, "model_max_length", None)
        if not isinstance(limit, int) or limit > 10**6:
            continue
        used = len(tokenizer(prompt).input_ids)  # with the start and end tokens
        if k + used > limit:
            raise ConfigError(f"'{key}' is {k} but the prompt {prompt!r} leaves {max(limit - used, 0)} free tokens "
                              f"of {type(tokenizer).__name__}'s {limit}; lower '{key}' to at most {max(limit - used, 0)}")


def placeholder_words(pipe, k: int, avoid: str) -> list[str]:
    """`k` distinct words that every tokenizer of `pipe` reads as one token and `avoid` does not contain."""
    encoders = text_encoders(pipe)
    first = next(iter(encoders.values()))[0]
    taken = set(avoid.lower().split())
    words = []
    for token, _ in sorted(first.get_vocab().items(), key=lambda item: item[1]):
        word = token.removesuffix("</w>")
        if not token.endswith("</w>") or not word.isalpha() or len(word) < 3 or word in taken:
            continue
        if all(single_token_id(tok, word) is not None for tok, _ in encoders.values()):
            words.append(word)
            if len(words) == k:
                return words
    raise ConfigError(f"found only {len(words)} single-token placeholder words for k = {k}; lower k")


class TextSlots:
    """`k` placeholder words whose input embeddings are `vectors[encoder]` (k, width) in each encoder.

    An encoder missing from `vectors` reads the placeholder words as the words they are.
    """

    def __init__(self, pipe, k: int, avoid: str = "", key: str = "k"):
        self.encoders = text_encoders(pipe)
        if not self.encoders:
            raise ConfigError("this model has no text encoder; a prompt attack needs one (use cce, soft, "
                              "trajectory, random or seed_search on a class-conditional model)")
        check_context(pipe, k, avoid, key)
        self.words = placeholder_words(pipe, k, avoid)
        self.ids = {name: [single_token_id(tok, w) for w in self.words] for name, (tok, _) in self.encoders.items()}
        self.vectors: dict[str, torch.Tensor] = {}

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def table(self, name: str) -> torch.Tensor:
        """The input-embedding matrix of encoder `name` (frozen)."""
        return self.encoders[name][1].get_input_embeddings().weight

    def initial(self, name: str, words: list[str] | None = None) -> torch.Tensor:
        """Starting vectors: the embeddings of `words` (one per slot, in the first tokenizer) or of the
        placeholder words themselves."""
        tokenizer = self.encoders[name][0]
        ids = [single_token_id(tokenizer, w) or tokenizer(w, add_special_tokens=False).input_ids[0]
               for w in (words or self.words)]
        return self.table(name)[torch.tensor(ids)].detach().clone().float()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for name, vectors in self.vectors.items():
                layer = self.encoders[name][1].get_input_embeddings()
                stack.enter_context(replaced_rows(layer, _slots_of(torch.tensor(self.ids[name])), vectors))
            yield


def _slots_of(ids: torch.Tensor):
    """Input id -> its position in `ids`, or -1."""
    def slots(input_ids):
        match = input_ids.unsqueeze(-1) == ids.to(input_ids.device)
        return torch.where(match.any(-1), match.long().argmax(-1), -1)
    return slots


class LabelRow:
    """The class embedding of `label` replaced by `vector` (a class-conditional model's "token")."""

    def __init__(self, denoiser, label: int):
        self.layer = denoiser.class_embedding
        self.label = label
        self.vector = self.layer.weight[label].detach().clone().float()

    def active(self):
        return replaced_rows(self.layer, lambda ids: torch.where(ids == self.label, 0, -1), self.vector[None])
