"""Real text from token ids: the words an attack may use, and whether its decoded prompt round-trips."""

from __future__ import annotations

import torch


def word_ids(tokenizer) -> torch.Tensor:
    """Ids of the vocabulary's whole ASCII words (CLIP's `word</w>`, SentencePiece's `\u2581word`), no special
    tokens, sorted: prompts of whole words decode to text that tokenizes back to the same ids."""
    special = set(tokenizer.all_special_ids)
    vocab = tokenizer.get_vocab()
    words = {i for t, i in vocab.items() if (t.endswith("</w>") and t[:-4].isascii() and t[:-4].isalnum())
             or (t.startswith("\u2581") and t[1:].isascii() and t[1:].isalnum())}
    return torch.tensor(sorted((words or set(vocab.values())) - special))


def decode_prompt(tokenizer, ids: list[int], prompt: str) -> dict:
    """`Adversary` fields of `ids` before `prompt`: the decoded text is what anyone could type; it
    round-trips when tokenizing it gives `ids` back."""
    prefix = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()
    text = f"{prefix} {prompt}".strip()
    again = tokenizer(prefix, add_special_tokens=False).input_ids
    return {"prompt": text, "ids": list(ids), "decoded": text, "round_trip": again == list(ids)}
