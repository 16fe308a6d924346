"""`erasekit ...`: erase, eval, grid, demo, train-base."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import build_configs, parse_cli_overrides
from .errors import ConfigError, ErasekitError

DEMO_OUTPUT = "outputs/demo"


@dataclass
class EvalCommand:
    model: str | None = field(default=None, metadata={"help": "model to evaluate (directory, Hub id, bundled:NAME)"})
    baseline: str | None = field(default=None, metadata={"help": "base model, evaluated on identical seeds"})
    forget: list[int] = field(default_factory=lambda: [0], metadata={"help": "erased class labels"})
    output: str | None = field(default=None, metadata={"help": "report directory"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing report directory"})
    suite: str | None = field(default=None, metadata={"help": "configs/eval/<suite>.yaml"})

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

    def __post_init__(self):
        if not self.model:
            raise ConfigError("'model' is missing; pass --model DIR_OR_ID")
        if self.columns < 1:
            raise ConfigError(f"'columns' is {self.columns} but must be >= 1")


def _overrides(rest: list[str]) -> tuple[dict, frozenset]:
    values = parse_cli_overrides(rest)
    return values, frozenset(values)


def cmd_erase(args, rest) -> int:
    from .erase.api import resolve_configs, run_erase

    values, raw = _overrides(rest)
    result = run_erase(resolve_configs(args.config, values, raw))
    if result.metrics:  # empty on the non-main processes of a multi-process run
        print(f"erased model written to {result.output_dir}")
    return 0


def cmd_demo(args, rest) -> int:
    from .erase.api import resolve_configs, run_erase

    values, raw = _overrides(rest)
    values = {"output_dir": DEMO_OUTPUT, "overwrite": True, "forget": [0], **values}
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
    from .config import load_yaml
    from .eval.class_conditional import ClassEvalConfig
    from .eval.evaluate import evaluate

    values, raw = _overrides(rest)
    suite_path = values.pop("suite", None)
    file_values = load_yaml(suite_path) if suite_path else {}
    if suite_path and file_values.get("kind") != "class-conditional":
        return _eval_prompt_suite(suite_path, values, raw)
    file_values.pop("kind", None)
    built = build_configs({"cmd": EvalCommand, "eval": ClassEvalConfig}, {**file_values, **values},
                          suite_path or "command line", raw)
    cmd, config = built["cmd"], built["eval"]
    report = evaluate(cmd.model, cmd.baseline, cmd.forget, cmd.output, config, cmd.overwrite)
    print(report.summary())
    if report.report_dir:
        print(f"report written to {report.report_dir}/report.md")
    return 0


def _eval_prompt_suite(suite_path: str, values: dict, raw: frozenset) -> int:
    from dataclasses import fields

    from .eval.suite import load_suite
    from .eval.text_eval import run_text_eval

    names = {f.name for f in fields(EvalCommand)}
    cmd = build_configs({"cmd": EvalCommand}, {k: values.pop(k) for k in list(values) if k in names},
                        "command line", raw)["cmd"]
    suite = load_suite(suite_path, values, raw)
    if not cmd.baseline or not cmd.output:
        raise ConfigError("a prompt suite compares two models: pass --baseline BASE and --output DIR")
    report = run_text_eval(cmd.model, cmd.baseline, suite, cmd.output, cmd.overwrite)
    if report:
        print(f"report written to {cmd.output}/report.md")
    return 0


def cmd_grid(args, rest) -> int:
    from .eval.class_conditional import ClassEvalConfig, generate_class_samples
    from .eval.evaluate import load_class_pipeline
    from .eval.grids import image_grid, side_by_side
    from .io import atomic_file, check_output_free

    values, raw = _overrides(rest)
    built = build_configs({"cmd": GridCommand, "eval": ClassEvalConfig}, values, "command line", raw)
    cmd, config = built["cmd"], built["eval"]
    check_output_free(cmd.output, cmd.overwrite, "grid")
    config.samples_per_class = max(2, cmd.columns)
    panels = []
    for name, model in (("base", cmd.baseline), ("erased" if cmd.baseline else "model", cmd.model)):
        if model is None:
            continue
        pipe = load_class_pipeline(model)
        images, labels = generate_class_samples(pipe, config)
        rows = [str(c) for c in range(pipe.num_classes)]
        panels.append(image_grid(images, labels, rows, cmd.columns, title=name, highlight_rows=cmd.forget))
    with atomic_file(cmd.output, cmd.overwrite) as tmp:
        side_by_side(panels).save(tmp, format="PNG")
    print(f"grid written to {cmd.output}")
    return 0


def cmd_train_base(args, rest) -> int:
    from .io import check_output_free
    from .pipelines.digits_t2i import DigitsT2IConfig, train_digits_t2i
    from .pipelines.train_base import DigitsBaseConfig, train_digits_base

    recipes = {"digits": (DigitsBaseConfig, train_digits_base, ("digits-cfg", "digits-classifier")),
               "digits-t2i": (DigitsT2IConfig, train_digits_t2i, ("digits-t2i",))}
    if args.name not in recipes:
        raise ConfigError(f"unknown base recipe '{args.name}'; available: {', '.join(recipes)}")
    config_cls, train, outputs = recipes[args.name]
    values, raw = _overrides(rest)
    config = build_configs({"base": config_cls}, values, "command line", raw)["base"]
    for sub in outputs:
        check_output_free(Path(config.output_dir) / sub, config.overwrite)
    record = train(config)
    print(f"selected UNet step {record['selected_step']}; wrote {', '.join(outputs)} under {config.output_dir}")
    return 0


def cmd_apply(args, rest) -> int:
    from .pipelines.delta import apply_delta_to_pipeline

    if rest:
        raise ConfigError(f"unexpected arguments {' '.join(rest)}; usage: erasekit apply BASE DELTA OUT [--overwrite]")
    out = apply_delta_to_pipeline(args.base, args.delta, args.out, overwrite=args.overwrite)
    print(f"erased pipeline rebuilt in {out}")
    return 0


def cmd_push(args, rest) -> int:
    from .pipelines.hub import push_to_hub

    if rest:
        raise ConfigError(f"unexpected arguments {' '.join(rest)}; usage: erasekit push OUT --repo-id ORG/NAME")
    url = push_to_hub(args.out, args.repo_id, private=args.private)
    print(f"pushed {args.out} to {url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erasekit", description="Erase concepts from diffusion models, measure it, ship it.",
        epilog="Any config key can be passed as --key value, e.g. --ratio 0.3 --forget 3.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("erase", help="erase classes or concepts with a YAML recipe")
    p.add_argument("--config", help="YAML recipe, e.g. configs/digits.yaml")
    p.set_defaults(func=cmd_erase)
    p = sub.add_parser("demo", help=f"erase digit 0 from bundled:digits-cfg into {DEMO_OUTPUT} (replaced each run)")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("eval", help="evaluate against the base: --model DIR --baseline BASE [--suite S.yaml] --output DIR")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("grid", help="draw a sample grid: --model DIR [--baseline BASE] --output grid.png")
    p.set_defaults(func=cmd_grid)
    p = sub.add_parser("apply", help="rebuild an erased model from its base and erasure_delta.safetensors")
    p.add_argument("base", help="base model (directory, Hub id, bundled:NAME)")
    p.add_argument("delta", help="erasure_delta.safetensors")
    p.add_argument("out", help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=cmd_apply)
    p = sub.add_parser("push", help="upload an erased model directory to the Hugging Face Hub")
    p.add_argument("out", help="output directory of `erasekit erase`")
    p.add_argument("--repo-id", required=True, help="ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.set_defaults(func=cmd_push)
    p = sub.add_parser("train-base", help="train the bundled base models: train-base digits | digits-t2i")
    p.add_argument("name", help="recipe name: digits (class-conditional UNet and judge) or digits-t2i")
    p.set_defaults(func=cmd_train_base)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
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
