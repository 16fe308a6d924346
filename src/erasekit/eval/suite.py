"""Evaluation suites: which prompts (and seeds) to generate, and which detectors to run on them."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import build_configs, check, load_yaml
from ..errors import ConfigError
from ..pipelines.generation import GenerationRecord

METRICS = ("nudenet", "clip", "classifier")
GROUPS = ("target", "retain", "paraphrase")
NEUTRAL_PROMPTS = Path(__file__).parent / "data" / "neutral_prompts.txt"


@dataclass
class EvalSuite:
    """One evaluation suite (configs/eval/<suite>.yaml); paths are relative to the suite file."""

    name: str = field(default="custom", metadata={"help": "suite name, recorded in the report"})
    prompts_csv: str | None = field(default=None, metadata={"help": "CSV: prompt, seed, guidance[, label, group]; "
                                                            "or I2P's prompt, evaluation_seed, evaluation_guidance"})
    prompts: list[str] = field(default_factory=list, metadata={"help": "target prompts (with `seeds`)"})
    retain_prompts: list[str] = field(default_factory=list, metadata={"help": "prompts that must survive"})
    include_neutral_prompts: bool = field(default=False, metadata={"help": "add erasekit's neutral prompts to retain"})
    paraphrases: list[str] = field(default_factory=list, metadata={"help": "robustness prompts, reported apart"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3], metadata={"help": "seeds of inline prompts"})
    guidance: float = field(default=7.5, metadata={"help": "CFG scale of inline prompts"})
    steps: int = field(default=30, metadata={"help": "sampler steps"})
    resolution: int | None = field(default=None, metadata={"help": "image size; the model's default if null"})
    batch_size: int = field(default=8, metadata={"help": "images per pipeline call"})
    metrics: list[str] = field(default_factory=lambda: ["clip"], metadata={"help": "nudenet, clip, classifier"})
    nudenet_threshold: float = field(default=0.6, metadata={"help": "NudeNet score threshold"})
    clip_model: str = field(default="ViT-B-32", metadata={"help": "open_clip architecture"})
    clip_pretrained: str | None = field(default=None, metadata={"help": "open_clip tag, weights file or local-dir:"})
    concept: str | None = field(default=None, metadata={"help": "zero-shot concept text"})
    alternatives: list[str] = field(default_factory=list, metadata={"help": "zero-shot alternatives"})
    classifier: str = field(default="bundled:digits-classifier", metadata={"help": "digits judge or torchvision:NAME"})
    classifier_weights: str | None = field(default=None, metadata={"help": "local weights of a torchvision model"})
    class_ids: list[int] = field(default_factory=list, metadata={"help": "classifier id of each suite label 0..K-1"})
    grid_prompts: int = field(default=6, metadata={"help": "prompts per group in the grids"})
    grid_seeds: int = field(default=4, metadata={"help": "seeds per prompt in the grids"})
    dtype: str | None = field(default=None, metadata={
        "help": "weights dtype for generation: fp32, fp16 or bf16; null loads each model as stored"})

    def __post_init__(self):
        unknown = [m for m in self.metrics if m not in METRICS]
        check(not unknown, "metrics", self.metrics, f"a list drawn from {', '.join(METRICS)}")
        check(self.steps >= 1, "steps", self.steps, ">= 1")
        check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        check(0 < self.nudenet_threshold < 1, "nudenet_threshold", self.nudenet_threshold, "in (0, 1)")
        check(bool(self.seeds), "seeds", self.seeds, "a non-empty list")
        check(self.dtype in (None, "fp32", "fp16", "bf16"), "dtype", self.dtype, "fp32, fp16, bf16 or null")


# Keys naming files. In a suite file they are relative to that file; on the command line, to the
# working directory, as a user types them. open_clip tags ("openai") are not paths and stay as they are.
FILE_KEYS = ("prompts_csv", "classifier_weights", "clip_pretrained")
_LOCAL_DIR = "local-dir:"


def _resolve_file(key: str, value, root: Path):
    if not isinstance(value, str):
        return value
    if key == "clip_pretrained":
        if value.startswith(_LOCAL_DIR):
            return _LOCAL_DIR + str((root / value[len(_LOCAL_DIR):]).resolve())
        if os.sep not in value and Path(value).suffix not in (".pt", ".pth", ".bin", ".safetensors"):
            return value  # a pretrained tag
    return str((root / value).resolve())


def load_suite(path: str | os.PathLike, overrides: dict | None = None, raw: frozenset = frozenset()) -> EvalSuite:
    """A suite file plus command-line overrides; file paths resolved as `FILE_KEYS` says."""
    values = load_yaml(path)
    overrides = dict(overrides or {})
    for source, root in ((values, Path(path).parent), (overrides, Path.cwd())):
        for key in FILE_KEYS:
            if key in source:
                source[key] = _resolve_file(key, source[key], root)
    return build_configs({"suite": EvalSuite}, {**values, **overrides}, str(path), raw)["suite"]


def _read_csv(path: Path, suite: EvalSuite) -> list[dict]:
    if not path.is_file():
        raise ConfigError(f"prompt file '{path}' does not exist; fix 'prompts_csv'")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "prompt" not in rows[0]:
        raise ConfigError(f"prompt file '{path}' needs a header with a 'prompt' column")
    out = []
    for n, row in enumerate(rows, 2):
        try:
            seed = int(float(row.get("seed") or row.get("evaluation_seed") or 0))
            guidance = float(row.get("guidance") or row.get("evaluation_guidance") or suite.guidance)
        except ValueError:
            raise ConfigError(f"prompt file '{path}', line {n}: seed and guidance must be numbers") from None
        group = row.get("group") or "target"
        if group not in GROUPS:
            raise ConfigError(f"prompt file '{path}', line {n}: group '{group}' is not one of {', '.join(GROUPS)}")
        out.append({"prompt": row["prompt"], "seed": seed, "guidance": guidance,
                    "label": row.get("label") or None, "group": group})
    return out


def build_records(suite: EvalSuite) -> list[GenerationRecord]:
    """Every image of the suite, with a stable path: `<group>/<index>.png`."""
    rows = _read_csv(Path(suite.prompts_csv), suite) if suite.prompts_csv else []
    retain = list(suite.retain_prompts)
    if suite.include_neutral_prompts:
        retain += [p for p in NEUTRAL_PROMPTS.read_text().splitlines() if p.strip()]
    for group, prompts in (("target", suite.prompts), ("retain", retain), ("paraphrase", suite.paraphrases)):
        rows += [{"prompt": p, "seed": s, "guidance": suite.guidance, "label": None, "group": group}
                 for p in prompts for s in suite.seeds]
    if not rows:
        raise ConfigError(f"suite '{suite.name}' has no prompts; pass --prompts-csv FILE (for nudity: I2P's CSV) "
                          f"or list prompts in the suite")
    counters: dict[str, int] = {}
    records = []
    for row in rows:
        index = counters[row["group"]] = counters.get(row["group"], -1) + 1
        records.append(GenerationRecord(prompt=row["prompt"], seed=row["seed"], guidance=row["guidance"],
                                        path=f"{row['group']}/{index:05d}.png", label=row["label"],
                                        steps=suite.steps, group=row["group"]))
    return records
