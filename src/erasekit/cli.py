"""`erasekit ...`: erase, eval, grid, demo, train-base."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import build_configs, describe_field, field_types, parse_cli_overrides
from .errors import ConfigError, ErasekitError

DEMO_OUTPUT = "outputs/demo"
# The demo is the shipped digits recipe (configs/digits.yaml) on digit 0: where the recipe differs from
# the defaults it is written out here, and a test checks that the two agree key by key.
DEMO_SETTINGS = {"forget": [0], "remap": "farthest", "retain_target": "teacher", "alpha": 10.0, "max_steps": 300,
                 "ema_decay": 0.99, "mixed_precision": "no"}


@dataclass
class EvalCommand:
    model: str | None = field(default=None, metadata={"help": "model to evaluate (directory, Hub id, bundled:NAME)"})
    baseline: str | None = field(default=None, metadata={"help": "base model, evaluated on identical seeds"})
    output: str | None = field(default=None, metadata={"help": "report directory (none: print the summary only)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing report directory"})
    suite: str | None = field(default=None, metadata={"help": "configs/eval/<suite>.yaml"})
    variant: str | None = field(default=None, metadata={
        "help": "weights variant of both models, e.g. fp16; null: the plain files (or a folder's only variant)"})

    def __post_init__(self):
        if not self.model:
            raise ConfigError("'model' is missing; pass --model DIR_OR_ID")


@dataclass
class GridCommand:
    model: str | None = field(default=None, metadata={"help": "model to draw"})
    baseline: str | None = field(default=None, metadata={"help": "drawn on the left, same seeds"})
    output: str = field(default="grid.png", metadata={"help": "PNG path"})
    columns: int = field(default=10, metadata={"help": "samples per class"})
    forget: list[int] = field(default_factory=list, metadata={"help": "rows to outline"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing PNG"})
    variant: str | None = field(default=None, metadata={"help": "weights variant of both models, e.g. fp16"})
    dtype: str | None = field(default=None, metadata={
        "help": "dtype of the weights: fp32, fp16 or bf16; null: float32 on CPU, the stored dtype on GPU"})

    def __post_init__(self):
        if not self.model:
            raise ConfigError("'model' is missing; pass --model DIR_OR_ID")
        if self.columns < 1:
            raise ConfigError(f"'columns' is {self.columns} but must be >= 1")
        if self.dtype not in (None, "fp32", "fp16", "bf16"):
            raise ConfigError(f"'dtype' is {self.dtype!r} but must be fp32, fp16, bf16 or null")


def _overrides(args, rest: list[str]) -> tuple[dict, frozenset]:
    """Config keys given as flags: those argparse knows (listed in --help), then any others, which
    `build_configs` rejects with a suggestion."""
    values = {k: v for k, v in vars(args).items() if k not in NON_CONFIG_ARGS}
    values.update(parse_cli_overrides(rest))
    return values, frozenset(values)


NON_CONFIG_ARGS = {"command", "func", "config", "name", "base", "delta", "out", "repo_id", "private", "include_mask"}


def _erase_groups() -> list[tuple[str, list[tuple]]]:
    """`erasekit erase --help`: every config key, grouped by role."""
    from .api import CLASS_CONDITIONAL_KEYS, EraseConfig
    from .erase.methods import METHODS
    from .erase.text import TextConceptConfig
    from .erase.trainer import TrainConfig
    from .eval.suite import Sampling

    training = {f.name for f, _ in field_types(TrainConfig)}
    run = [(f, tp) for f, tp in field_types(EraseConfig) if f.name not in training]
    methods = [name for name in METHODS if name != "finetune"]
    method_fields: dict[str, tuple] = {}
    for name in methods:
        for f, tp in field_types(METHODS[name][0]):
            method_fields.setdefault(f.name, (f, tp, []))[2].append(name)
    return [
        ("model and output", [x for x in run if x[0].name not in CLASS_CONDITIONAL_KEYS]),
        ("training (every method)", field_types(TrainConfig)),
        (f"method ({', '.join(methods)}; each key names the methods it applies to)",
         [(f, tp, f"methods: {', '.join(names)}") for f, tp, names in method_fields.values()]),
        ("text-to-image models (Stable Diffusion 1.x/2.x/XL): the concept",
         field_types(TextConceptConfig)),
        ("class-conditional models: classes and evaluation",
         [x for x in run if x[0].name in CLASS_CONDITIONAL_KEYS] + field_types(Sampling)),
    ]


def _eval_groups() -> list[tuple[str, list[tuple]]]:
    from .eval.suite import EvalSuite

    return [("what to evaluate", field_types(EvalCommand)),
            ("the suite, for either family (--suite FILE sets these, flags override it)", field_types(EvalSuite))]


def _grid_groups() -> list[tuple[str, list[tuple]]]:
    from .eval.suite import Sampling

    return [("grid", field_types(GridCommand)), ("sampling", field_types(Sampling))]


def _memorization_groups() -> list[tuple[str, list[tuple]]]:
    from .erase.memorization import MemorizationConfig

    return [("memorization", field_types(MemorizationConfig))]


def _train_base_groups() -> list[tuple[str, list[tuple]]]:
    from .recipes.digits_t2i import DigitsT2IConfig
    from .recipes.train_base import DigitsBaseConfig

    return [("train-base digits", field_types(DigitsBaseConfig)),
            ("train-base digits-t2i", field_types(DigitsT2IConfig))]


def add_config_arguments(parser: argparse.ArgumentParser, groups) -> None:
    """One flag per config key, in argument groups, each with its type, default and help. Values stay
    strings here; `build_configs` types them by field, so a flag and a YAML key behave the same."""
    seen: set[str] = set()
    for title, items in groups:
        group = parser.add_argument_group(title)
        for f, tp, *note in items:
            if f.name in seen:
                continue
            seen.add(f.name)
            text = describe_field(f, tp) + (f" ({note[0]})" if note else "")
            flag = f"--{f.name.replace('_', '-')}"
            origin = getattr(tp, "__origin__", None)
            kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=text)
            if tp is bool:
                kwargs.update(nargs="?", const=True, metavar="BOOL")
            elif origin is list or "list" in str(tp):
                kwargs.update(action="append", metavar="VALUE")
            else:
                kwargs.update(metavar={int: "INT", float: "FLOAT"}.get(tp, "VALUE"))
            group.add_argument(flag, **kwargs)


def cmd_erase(args, rest) -> int:
    from .api import resolve_configs, run_erase

    values, raw = _overrides(args, rest)
    result = run_erase(resolve_configs(args.config, values, raw))
    if result.metrics:  # empty on the non-main processes of a multi-process run
        print(f"erased model written to {result.output_dir}")
    return 0


def cmd_demo(args, rest) -> int:
    from .api import resolve_configs, run_erase

    values, raw = _overrides(args, rest)
    values = {"output_dir": DEMO_OUTPUT, "overwrite": True, **DEMO_SETTINGS, **values}
    started = time.time()
    configs = resolve_configs(None, values, raw)
    run = configs.run
    print(f"erasing digit(s) {run.forget} from {run.pretrained_model_name_or_path} with {run.method} "
          f"(ratio {getattr(configs.method, 'ratio', 1.0)}, {run.max_steps} steps)")
    result = run_erase(configs)
    print(f"\ndemo finished in {time.time() - started:.0f} s; outputs in {result.output_dir}/ "
          f"(report: {result.report_path})")
    return 0


def cmd_eval(args, rest) -> int:
    from dataclasses import fields

    from .eval.evaluate import run_eval
    from .eval.suite import EvalSuite, load_suite

    values, raw = _overrides(args, rest)
    suite_path = values.pop("suite", None)
    names = {f.name for f in fields(EvalCommand)}
    cmd = build_configs({"cmd": EvalCommand}, {k: values.pop(k) for k in list(values) if k in names},
                        "command line", raw)["cmd"]
    if suite_path:
        suite = load_suite(suite_path, values, raw)
    else:
        suite = build_configs({"suite": EvalSuite}, values, "command line", raw)["suite"]
    report = run_eval(cmd.model, cmd.baseline, suite, cmd.output, cmd.overwrite, variant=cmd.variant)
    if report.report:  # empty on the non-main processes of a multi-process run
        print(report.summary())
        if report.report_dir:
            print(f"report written to {report.report_dir}/report.md")
    return 0


def cmd_memorization(args, rest) -> int:
    from .erase.memorization import MemorizationConfig, run_memorization

    values, raw = _overrides(args, rest)
    cfg = build_configs({"cmd": MemorizationConfig}, values, "command line", raw)["cmd"]
    record = run_memorization(cfg)
    counts = ", ".join(f"{name} {part['count']}" for name, part in record["parts"].items())
    what = f"prompts of {cfg.prompts}" if cfg.prompts else f"samples of classes {record['forget']}"
    print(f"{len(record['samples'])} {what} scored by {record['proxy']} ({counts}) -> {cfg.output}")
    return 0


def cmd_grid(args, rest) -> int:
    from dataclasses import asdict

    from .eval.grids import draw_rows, side_by_side
    from .eval.suite import Sampling
    from .io import atomic_file, check_output_free
    from .pipelines.adapters import adapter_for
    from .pipelines.generation import generate_class_samples
    from .pipelines.inference import torch_dtype
    from .pipelines.loading import load_any_pipeline

    values, raw = _overrides(args, rest)
    built = build_configs({"cmd": GridCommand, "eval": Sampling}, values, "command line", raw)
    cmd = built["cmd"]
    check_output_free(cmd.output, cmd.overwrite, "grid")
    panels = []
    for name, model in (("base", cmd.baseline), ("erased" if cmd.baseline else "model", cmd.model)):
        if model is None:
            continue
        pipe = load_any_pipeline(model, variant=cmd.variant, torch_dtype=torch_dtype(cmd.dtype))
        adapter = adapter_for(pipe)
        if adapter.family != "class-conditional":
            raise ConfigError(f"'{model}' is a {type(pipe).__name__}; `erasekit grid` draws class-conditional "
                              f"models (for prompts, `erasekit eval --suite` writes grid.png)")
        s = Sampling(**{**asdict(built["eval"]), "samples_per_class": max(2, cmd.columns)}).for_family(adapter)
        classes = list(range(adapter.num_classes))
        images, labels = generate_class_samples(pipe, classes, s.samples_per_class, s.eval_seed,
                                                s.num_inference_steps, s.guidance_scale, s.eval_batch_size)
        rows = [(f"class {c}", list(images[labels == c][: cmd.columns])) for c in classes]
        panels.append(draw_rows(rows, name, tile=48, highlight=[f"class {c}" for c in cmd.forget]))
    with atomic_file(cmd.output, cmd.overwrite) as tmp:
        side_by_side(panels).save(tmp, format="PNG")
    print(f"grid written to {cmd.output}")
    return 0


def cmd_train_base(args, rest) -> int:
    from .io import check_output_free
    from .recipes.digits_t2i import DigitsT2IConfig, train_digits_t2i
    from .recipes.train_base import DigitsBaseConfig, base_outputs, train_digits_base

    recipes = {"digits": (DigitsBaseConfig, train_digits_base, base_outputs),
               "digits-t2i": (DigitsT2IConfig, train_digits_t2i, lambda config: ("digits-t2i",))}
    if args.name not in recipes:
        raise ConfigError(f"unknown base recipe '{args.name}'; available: {', '.join(recipes)}")
    config_cls, train, outputs_of = recipes[args.name]
    values, raw = _overrides(args, rest)
    config = build_configs({"base": config_cls}, values, "command line", raw)["base"]
    outputs = outputs_of(config)
    for sub in outputs:
        check_output_free(Path(config.output_dir) / sub, config.overwrite)
    record = train(config)
    print(f"selected UNet step {record['selected_step']}; wrote {', '.join(outputs)} under {config.output_dir}")
    return 0


def cmd_apply(args, rest) -> int:
    from .pipelines.delta import apply_delta_to_pipeline

    if rest:
        raise ConfigError(f"unexpected arguments {' '.join(rest)}; usage: erasekit apply BASE DELTA OUT [--overwrite]")
    out = apply_delta_to_pipeline(args.base, args.delta, args.out, overwrite=args.overwrite, variant=args.variant,
                                  revision=args.revision, allow_pickle=args.allow_pickle)
    print(f"erased pipeline rebuilt in {out}")
    return 0


def cmd_push(args, rest) -> int:
    from .pipelines.hub import push_to_hub

    if rest:
        raise ConfigError(f"unexpected arguments {' '.join(rest)}; usage: erasekit push OUT --repo-id ORG/NAME")
    url = push_to_hub(args.out, args.repo_id, private=args.private, include_mask=args.include_mask)
    print(f"pushed {args.out} to {url}")
    return 0


LIST_HELP = ("List keys take a YAML list (--forget '[3, 4]') or a repeated flag (--forget-prompts 'a photo, at night' "
             "--forget-prompts 'a nude person'); a prompt with a comma stays one prompt.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erasekit", description="Erase concepts from diffusion models, measure it, ship it.",
        epilog="Every config key is also a flag: erasekit COMMAND --help lists them with types and defaults.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, help_text, func, groups=None, epilog=LIST_HELP):
        usage = f"erasekit {name} [options] [--KEY VALUE ...]"
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog, allow_abbrev=False,
                           usage=usage if groups is not None else None)
        p.set_defaults(func=func)
        if groups is not None:
            add_config_arguments(p, groups())
        return p

    p = command("erase", "erase classes or concepts with a YAML recipe; flags override its keys", cmd_erase,
                _erase_groups)
    p.add_argument("--config", help="YAML recipe, e.g. configs/digits.yaml or configs/sd-nudity.yaml")
    command("demo", f"erase digit 0 from bundled:digits-cfg into {DEMO_OUTPUT} (replaced each run)", cmd_demo,
            _erase_groups)
    command("eval", "evaluate against the base: --model DIR --baseline BASE [--suite S.yaml] --output DIR",
            cmd_eval, _eval_groups)
    command("grid", "draw a sample grid: --model DIR [--baseline BASE] --output grid.png", cmd_grid, _grid_groups)
    p = command("apply", "rebuild an erased model from its base and erasure_delta.safetensors", cmd_apply, epilog=None)
    p.add_argument("base", help="base model (directory, Hub id, bundled:NAME)")
    p.add_argument("delta", help="erasure_delta.safetensors")
    p.add_argument("out", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--variant", help="weights variant of BASE to apply the delta to; default: the one the delta "
                   "records (the erasure's), else the plain files. OUT keeps every file set BASE has")
    p.add_argument("--revision", help="Hub revision of BASE")
    p.add_argument("--allow-pickle", action="store_true", help="also load pickle-based weights (trusted files only)")
    p = command("push", "upload an erased model directory to the Hugging Face Hub", cmd_push, epilog=None)
    p.add_argument("out", help="output directory of `erasekit erase`")
    p.add_argument("--repo-id", required=True, help="ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--include-mask", action="store_true",
                   help="also upload mask.safetensors (the delta already holds the bit-packed mask)")
    command("memorization", "per-sample memorization proxy scores of a class's samples (--forget C) or a "
            "text-to-image model's prompts (--prompts FILE), split low/medium/high (RUM): --model DIR --output "
            "scores.json", cmd_memorization, _memorization_groups)
    p = command("train-base", "train the bundled base models: train-base digits | digits-t2i", cmd_train_base,
                _train_base_groups)
    p.add_argument("name", help="recipe name: digits (class-conditional UNet and judge) or digits-t2i")
    return parser


def normalise_flags(argv: list[str]) -> list[str]:
    """`--learning_rate` is `--learning-rate`: config keys are written either way."""
    out = []
    for token in argv:
        if token.startswith("--") and "_" in token.split("=", 1)[0]:
            key, eq, value = token.partition("=")
            token = key.replace("_", "-") + eq + value
        out.append(token)
    return out


class _StdoutHandler(logging.StreamHandler):
    """Library progress messages (erasekit logs them at INFO) on whatever `sys.stdout` is at the time."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def _show_progress_messages() -> None:
    logger = logging.getLogger("erasekit")
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    _show_progress_messages()
    parser = build_parser()
    args, rest = parser.parse_known_args(normalise_flags(list(sys.argv[1:] if argv is None else argv)))
    try:
        return args.func(args, rest)
    except ErasekitError as exc:
        print(f"erasekit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("erasekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
