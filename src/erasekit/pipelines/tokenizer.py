"""A real CLIP tokenizer built offline from the BPE vocabulary that open_clip_torch ships."""

from __future__ import annotations

import functools
import gzip
import json
import os
import tempfile
from pathlib import Path

from transformers import CLIPTokenizer, T5Tokenizer

NUM_MERGES = 49152 - 256 - 2  # CLIP's vocabulary: 256 bytes x2 (+ "</w>"), merges, then 2 specials
START, END = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode characters, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in sorted(chars, key=lambda b: (b not in printable, printable.index(b)
                                                           if b in printable else b))]


def bpe_vocab_path() -> Path:
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip_torch does not ship {path.name}; reinstall open_clip_torch")
    return path


def write_clip_tokenizer_files(out_dir: str | os.PathLike) -> Path:
    """Write `vocab.json` and `merges.txt` equivalent to open_clip's `SimpleTokenizer`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = gzip.open(bpe_vocab_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    vocab = _bytes_to_unicode()
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [START, END]
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return out


@functools.lru_cache(maxsize=1)
def _tokenizer_dir() -> str:
    return str(write_clip_tokenizer_files(tempfile.mkdtemp(prefix="erasekit-clip-tokenizer-")))


def build_clip_tokenizer(max_length: int = 77, pad_token: str = END):
    """A `transformers.CLIPTokenizer` whose ids match open_clip's tokenizer exactly (no download).

    SD 1.x pads with "<|endoftext|>"; the OpenCLIP tokenizers of SD 2.x and SDXL's second encoder pad with "!".
    """

    # from_pretrained on a vocab.json + merges.txt directory works across transformers 4 and 5.
    return CLIPTokenizer.from_pretrained(_tokenizer_dir(), model_max_length=max_length, bos_token=START,
                                         eos_token=END, unk_token=END, pad_token=pad_token)


@functools.lru_cache(maxsize=1)
def _t5_pieces(size: int) -> tuple[tuple[str, float], ...]:
    """A SentencePiece-style unigram vocabulary: the specials, then CLIP's most frequent whole words as
    word-initial pieces ("\u2581word", scored by BPE rank), then single characters as a fallback."""
    vocab = json.loads((Path(_tokenizer_dir()) / "vocab.json").read_text())
    words = [t[:-4] for t in vocab if t.endswith("</w>") and t[:-4].isalnum() and t[:-4].isascii()][:size]
    chars = sorted({c for w in words for c in w} | set(",.!?'-:;()"))
    return (("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0),
            *(("\u2581" + w, -1.0 - i / 100) for i, w in enumerate(words)),
            ("\u2581", -500.0), *((c, -1000.0) for c in chars))


def build_t5_tokenizer(size: int = 4000, max_length: int = 512):
    """A `transformers.T5Tokenizer` (unigram, "</s>"-terminated, "<pad>" = 0, 100 sentinel ids), built
    offline from the CLIP vocabulary: T5's own SentencePiece model does not ship in any package here.
    Ids differ from a real T5 tokenizer's; the structure, specials and padding behave the same."""

    return T5Tokenizer(vocab=list(_t5_pieces(size)), extra_ids=100, model_max_length=max_length)
