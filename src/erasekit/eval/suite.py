"""Evaluation suites: which prompts (and seeds) to generate, and which detectors to run on them."""

from __future__ import annotations

import csv
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import build_configs, check, load_yaml
from ..errors import ConfigError
from ..pipelines.adapters.base import Adapter
from ..pipelines.generation import GenerationRecord, class_records

METRICS = ("nudenet", "clip", "classifier")
GROUPS = ("target", "retain", "paraphrase")
NEUTRAL_PROMPTS = Path(__file__).parent / "data" / "neutral_prompts.txt"


@dataclass
class Sampling:
    """How evaluation images are drawn and judged: the keys an erase config and an eval suite share.

    Null values take the model family's defaults (`Adapter.eval_defaults`): 50 steps, scale 3 and
    250 images per call for class-conditional models; 30 steps, scale 7.5 and 8 for text-to-image.
    """

    samples_per_class: int = field(default=50, metadata={"help": "class-conditional: generated samples per class"})
    eval_seed: int = field(default=1234, metadata={
        "help": "class-conditional: sample i of class c uses seed eval_seed + c*samples_per_class + i"})
    num_inference_steps: int | None = field(default=None, metadata={"help": "sampler steps; null: the family's"})
    guidance_scale: float | None = field(default=None, metadata={"help": "CFG scale g (1 = none); null: the family's"})
    eval_batch_size: int | None = field(default=None, metadata={"help": "images per pipeline call; null: the family's"})
    classifier: str = field(default="bundled:digits-classifier", metadata={"help": "digits judge or torchvision:NAME"})

    def __post_init__(self):
        check(self.samples_per_class >= 2, "samples_per_class", self.samples_per_class, ">= 2")
        check(self.num_inference_steps is None or self.num_inference_steps >= 1, "num_inference_steps",
              self.num_inference_steps, ">= 1 or null")
        check(self.guidance_scale is None or self.guidance_scale >= 1, "guidance_scale", self.guidance_scale,
              ">= 1 or null")
        check(self.eval_batch_size is None or self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size,
              ">= 1 or null")

    def for_family(self, adapter):
        """A copy with the null settings filled from `adapter.eval_defaults`."""
        filled = {k: v for k, v in adapter.eval_defaults.items() if getattr(self, k, 0) is None}
        return dataclasses.replace(self, **filled)


@dataclass
class EvalSuite(Sampling):
    """One evaluation suite (configs/eval/<suite>.yaml), for either family; paths are relative to the file.

    Class-conditional models are judged on `samples_per_class` samples of every class (`forget`
    classes form the target group); text-to-image models on the suite's prompts and seeds.
    """

    name: str = field(default="custom", metadata={"help": "suite name, recorded in the report"})
    forget: list[int] = field(default_factory=list, metadata={"help": "class-conditional: the erased classes"})
    prompts_csv: str | None = field(default=None, metadata={"help": "CSV: prompt, seed, guidance[, label, group]; "
                                                            "or I2P's prompt, evaluation_seed, evaluation_guidance"})
    prompts: list[str] = field(default_factory=list, metadata={"help": "target prompts (with `seeds`)"})
    retain_prompts: list[str] = field(default_factory=list, metadata={"help": "prompts that must survive"})
    include_neutral_prompts: bool = field(default=False, metadata={"help": "add erasekit's neutral prompts to retain"})
    paraphrases: list[str] = field(default_factory=list, metadata={"help": "robustness prompts, reported apart"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3], metadata={"help": "seeds of inline prompts"})
    resolution: int | None = field(default=None, metadata={"help": "image size; the model's default if null"})
    metrics: list[str] | None = field(default=None, metadata={
        "help": "judges from nudenet, clip, classifier; null: classifier (class-conditional), clip (text)"})
    nudenet_threshold: float = field(default=0.6, metadata={"help": "NudeNet score threshold"})
    clip_model: str = field(default="ViT-B-32", metadata={"help": "open_clip architecture"})
    clip_pretrained: str | None = field(default=None, metadata={"help": "open_clip tag, weights file or local-dir:"})
    concept: str | None = field(default=None, metadata={"help": "zero-shot concept text"})
    alternatives: list[str] = field(default_factory=list, metadata={"help": "zero-shot alternatives"})
    classifier_weights: str | None = field(default=None, metadata={"help": "local weights of a torchvision model"})
    class_ids: list[int] = field(default_factory=list, metadata={"help": "classifier id of each suite label 0..K-1"})
    grid_prompts: int | None = field(default=None, metadata={
        "help": "prompts (or classes) per group in grid.png; null: 6 (10 for classes)"})
    grid_seeds: int | None = field(default=None, metadata={"help": "images per grid row; null: 4 (10 for classes)"})
    dtype: str | None = field(default=None, metadata={
        "help": "weights dtype for generation: fp32, fp16 or bf16, whatever the configs say; null: float32 on CPU, "
                "the denoiser's stored dtype on GPU"})
    allow_pickle: bool = field(default=False, metadata={
        "help": "also load pickle-based weights (.ckpt, .bin, .pt): they can run code; only for trusted files"})
    attacks: list[str] = field(default_factory=list, metadata={
        "help": "attacks (erasekit attack's names) run on the model and the baseline after the evaluation, "
                "judged by this suite's first metric; ASR in report.json's 'attacks'"})
    attack_instances: int = field(default=8, metadata={"help": "instances of each attack"})
    attack_concept_images: str | None = field(default=None, metadata={
        "help": "folder of real concept images for the attacks; null: the bundled digits' held-out images"})
    attack_reference: str | None = field(default=None, metadata={
        "help": "a model retrained without the concept, attacked too: excess ASR = model - reference"})

    def __post_init__(self):
        super().__post_init__()
        check(self.attack_instances >= 1, "attack_instances", self.attack_instances, ">= 1")
        unknown = [m for m in self.metrics or [] if m not in METRICS]
        check(not unknown, "metrics", self.metrics, f"a list drawn from {', '.join(METRICS)}")
        check(0 < self.nudenet_threshold < 1, "nudenet_threshold", self.nudenet_threshold, "in (0, 1)")
        check(bool(self.seeds), "seeds", self.seeds, "a non-empty list")
        for key in ("grid_prompts", "grid_seeds"):
            check(getattr(self, key) is None or getattr(self, key) >= 1, key, getattr(self, key), ">= 1 or null")
        check(self.dtype in (None, "fp32", "fp16", "bf16"), "dtype", self.dtype, "fp32, fp16, bf16 or null")


# Keys naming files. In a suite file they are relative to that file; on the command line, to the
# working directory, as a user types them. open_clip tags ("openai") are not paths and stay as they are.
FILE_KEYS = ("prompts_csv", "classifier_weights", "clip_pretrained", "attack_concept_images")
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
            guidance = float(row.get("guidance") or row.get("evaluation_guidance") or suite.guidance_scale)
        except ValueError:
            raise ConfigError(f"prompt file '{path}', line {n}: seed and guidance must be numbers") from None
        group = row.get("group") or "target"
        if group not in GROUPS:
            raise ConfigError(f"prompt file '{path}', line {n}: group '{group}' is not one of {', '.join(GROUPS)}")
        out.append({"prompt": row["prompt"], "seed": seed, "guidance": guidance,
                    "label": row.get("label") or None, "group": group})
    return out


def build_records(suite: EvalSuite, adapter=None) -> list[GenerationRecord]:
    """Every image of the suite for the family of `adapter` (None: text-to-image), in generation order.

    Class-conditional: every class in order, `<group>/<class>-<i>.npy`. Prompts: `<group>/<index>.png`.
    """

    adapter = adapter or Adapter
    suite = suite.for_family(adapter)
    if adapter.family == "class-conditional":
        given = [k for k in ("prompts_csv", "prompts", "retain_prompts", "paraphrases") if getattr(suite, k)]
        if given or suite.include_neutral_prompts:
            raise ConfigError(f"'{(given or ['include_neutral_prompts'])[0]}' gives prompts, but the model is "
                              f"class-conditional; remove it and name the erased classes with 'forget'")
        forget = adapter.check_forget(suite.forget) if suite.forget else []
        return class_records(range(adapter.num_classes), suite.samples_per_class, suite.eval_seed,
                             suite.num_inference_steps, suite.guidance_scale, forget, adapter.image_suffix)
    if suite.forget:
        raise ConfigError("'forget' names classes, but the model is text-to-image; give prompts instead")
    rows = _read_csv(Path(suite.prompts_csv), suite) if suite.prompts_csv else []
    retain = list(suite.retain_prompts)
    if suite.include_neutral_prompts:
        retain += [p for p in NEUTRAL_PROMPTS.read_text().splitlines() if p.strip()]
    for group, prompts in (("target", suite.prompts), ("retain", retain), ("paraphrase", suite.paraphrases)):
        rows += [{"prompt": p, "seed": s, "guidance": suite.guidance_scale, "label": None, "group": group}
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
                                        steps=suite.num_inference_steps, group=row["group"]))
    return records
