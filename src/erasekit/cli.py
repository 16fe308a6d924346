"""`erasekit ...`: erase, eval, attack, grid, demo, train-base."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from .adversarial import AdversarialConfig
from .api import run_erase
from .attacks import attack
from .attacks.settings import attack_help_groups, attacks_epilog, resolve_attack_configs
from .config import build_configs, describe_field, field_types, load_yaml, parse_cli_overrides
from .erase.class_data import ClassDataConfig
from .erase.memorization import MemorizationConfig, run_memorization
from .erase.methods import METHODS, get_method
from .erase.rum import RefineConfig
from .erase.text import TextConceptConfig
from .erase.trainer import TrainConfig
from .errors import ConfigError, ErasekitError
from .eval.evaluate import run_eval
from .eval.grids import class_grid
from .eval.suite import EvalSuite, Sampling, load_suite
from .evaluation import SuiteAttacks
from .io import atomic_file, check_output_free
from .pipelines.delta import apply_delta_to_pipeline
from .pipelines.hub import push_to_hub
from .recipe import EraseConfig, resolve_configs
from .recipes.digits_t2i import DigitsT2IConfig, train_digits_t2i
from .recipes.digits_t2i import model_name as t2i_model_name
from .recipes.train_base import DigitsBaseConfig, base_outputs, train_digits_base

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


def _erase_groups(method: str = "salun") -> list[tuple[str, list[tuple]]]:
    """`erasekit erase --help`: every config key of an erase with `method`, grouped by role."""
    spec = get_method(method)
    return [
        ("model and output", field_types(EraseConfig)),
        ("training", field_types(TrainConfig)),
        (f"method {method}: {spec.description}", field_types(spec.config)),
        ("class-conditional models: classes or samples to forget", field_types(ClassDataConfig)),
        ("text-to-image models (Stable Diffusion 1.x/2.x/XL, SD 3, FLUX): the concept",
         field_types(TextConceptConfig)),
        ("memorization-aware refinement (RUM)", field_types(RefineConfig)),
        ("attack in the loop (AdvUnlearn/STEREO-style rounds)", field_types(AdversarialConfig)),
        ("evaluation sampling", field_types(Sampling)),
    ]


def _methods_epilog() -> str:
    width = max(len(name) for name in METHODS)
    lines = [f"  {name:<{width}}  {spec.description}" for name, spec in METHODS.items()]
    return ("methods (--method NAME; `erasekit erase --method NAME --help` lists its settings and defaults):\n"
            + "\n".join(lines) + "\n\n" + LIST_HELP)


def method_in(argv: list[str]) -> str:
    """The method an erase command line names: --method, else its --config recipe's, else salun. It picks
    the method settings that --help lists; the erase itself resolves the method again from the configs."""
    for i, token in enumerate(argv):
        if token == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--method="):
            return token.partition("=")[2]
    for i, token in enumerate(argv):
        path = argv[i + 1] if token == "--config" and i + 1 < len(argv) else \
            token.partition("=")[2] if token.startswith("--config=") else None
        if path and Path(path).is_file():
            method = load_yaml(path).get("method", "salun")
            return method if isinstance(method, str) else "salun"
    return "salun"


def _eval_groups() -> list[tuple[str, list[tuple]]]:
    return [("what to evaluate", field_types(EvalCommand)),
            ("the suite, for either family (--suite FILE sets these, flags override it)", field_types(EvalSuite))]


def _grid_groups() -> list[tuple[str, list[tuple]]]:
    return [("grid", field_types(GridCommand)), ("sampling", field_types(Sampling))]


def _memorization_groups() -> list[tuple[str, list[tuple]]]:
    return [("memorization", field_types(MemorizationConfig))]


def _train_base_groups() -> list[tuple[str, list[tuple]]]:
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
    values, raw = _overrides(args, rest)
    result = run_erase(resolve_configs(args.config, values, raw))
    if result.metrics:  # empty on the non-main processes of a multi-process run
        print(f"erased model written to {result.output_dir}")
    return 0


def cmd_demo(args, rest) -> int:
    values, raw = _overrides(args, rest)
    values = {"output_dir": DEMO_OUTPUT, "overwrite": True, **DEMO_SETTINGS, **values}
    started = time.time()
    configs = resolve_configs(None, values, raw)
    run = configs.run
    print(f"erasing digit(s) {configs.data.forget} from {run.pretrained_model_name_or_path} with {run.method} "
          f"(ratio {getattr(configs.method, 'ratio', 1.0)}, {configs.train.max_steps} steps)")
    result = run_erase(configs)
    print(f"\ndemo finished in {time.time() - started:.0f} s; outputs in {result.output_dir}/ "
          f"(report: {result.report_path})")
    return 0


def cmd_eval(args, rest) -> int:
    values, raw = _overrides(args, rest)
    suite_path = values.pop("suite", None)
    names = {f.name for f in fields(EvalCommand)}
    cmd = build_configs({"cmd": EvalCommand}, {k: values.pop(k) for k in list(values) if k in names},
                        "command line", raw)["cmd"]
    if suite_path:
        suite = load_suite(suite_path, values, raw)
    else:
        suite = build_configs({"suite": EvalSuite}, values, "command line", raw)["suite"]
    report = run_eval(cmd.model, cmd.baseline, suite, cmd.output, cmd.overwrite, variant=cmd.variant,
                      attacks=SuiteAttacks())
    if report.report:  # empty on the non-main processes of a multi-process run
        print(report.summary())
        if report.report_dir:
            print(f"report written to {report.report_dir}/report.md")
    return 0


def cmd_attack(args, rest) -> int:
    values, raw = _overrides(args, rest)
    run, configs = resolve_attack_configs(args.config, values, raw)
    report = attack(run, configs)
    if not report:  # a non-main process of `accelerate launch`
        return 0
    for row in report["attacks"]:
        excess = f", excess {row['excess_asr']:+.0%}" if "excess_asr" in row else ""
        print(f"{row['attack']:>11} on {row['role']:<9} ASR {row['asr']:.0%} (pre {row['pre_asr']:.0%}, "
              f"n {row['n']}){excess}")
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print(f"report written to {run.output}/report.md")
    return 0


def cmd_memorization(args, rest) -> int:
    values, raw = _overrides(args, rest)
    cfg = build_configs({"cmd": MemorizationConfig}, values, "command line", raw)["cmd"]
    record = run_memorization(cfg)
    counts = ", ".join(f"{name} {part['count']}" for name, part in record["parts"].items())
    what = f"prompts of {cfg.prompts}" if cfg.prompts else f"samples of classes {record['forget']}"
    print(f"{len(record['samples'])} {what} scored by {record['proxy']} ({counts}) -> {cfg.output}")
    return 0


def cmd_grid(args, rest) -> int:
    values, raw = _overrides(args, rest)
    built = build_configs({"cmd": GridCommand, "eval": Sampling}, values, "command line", raw)
    cmd = built["cmd"]
    check_output_free(cmd.output, cmd.overwrite, "grid")
    models = [("base", cmd.baseline)] if cmd.baseline else []
    models.append(("erased" if cmd.baseline else "model", cmd.model))
    image = class_grid(models, built["eval"], cmd.columns, cmd.forget, cmd.variant, cmd.dtype)
    with atomic_file(cmd.output, cmd.overwrite) as tmp:
        image.save(tmp, format="PNG")
    print(f"grid written to {cmd.output}")
    return 0


def cmd_train_base(args, rest) -> int:
    recipes = {"digits": (DigitsBaseConfig, train_digits_base, base_outputs),
               "digits-t2i": (DigitsT2IConfig, train_digits_t2i, lambda config: (t2i_model_name(config),))}
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
    if rest:
        raise ConfigError(f"unexpected arguments {' '.join(rest)}; usage: erasekit apply BASE DELTA OUT [--overwrite]")
    out = apply_delta_to_pipeline(args.base, args.delta, args.out, overwrite=args.overwrite, variant=args.variant,
                                  revision=args.revision, allow_pickle=args.allow_pickle)
    print(f"erased pipeline rebuilt in {out}")
    return 0


def cmd_push(args, rest) -> int:
    if rest:
        raise ConfigError(f"unexpected arguments {' '.join(rest)}; usage: erasekit push OUT --repo-id ORG/NAME")
    url = push_to_hub(args.out, args.repo_id, private=args.private, include_mask=args.include_mask)
    print(f"pushed {args.out} to {url}")
    return 0


LIST_HELP = ("List keys take a YAML list (--forget '[3, 4]') or a repeated flag (--forget-prompts 'a photo, at night' "
             "--forget-prompts 'a nude person'); a prompt with a comma stays one prompt.")


def build_parser(method: str = "salun") -> argparse.ArgumentParser:
    """The parser; `erase` and `demo` list the settings of `method` (see `method_in`)."""
    parser = argparse.ArgumentParser(
        prog="erasekit", description="Erase concepts from diffusion models, measure it, ship it.",
        epilog="Every config key is also a flag: erasekit COMMAND --help lists them with types and defaults.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, help_text, func, groups=None, epilog=LIST_HELP):
        usage = f"erasekit {name} [options] [--KEY VALUE ...]"
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog, allow_abbrev=False,
                           usage=usage if groups is not None else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        if groups is not None:
            add_config_arguments(p, groups())
        return p

    p = command("erase", "erase classes or concepts with a YAML recipe; flags override its keys", cmd_erase,
                lambda: _erase_groups(method), _methods_epilog())
    p.add_argument("--config", help="YAML recipe, e.g. configs/digits.yaml or configs/sd-nudity.yaml")
    command("demo", f"erase digit 0 from bundled:digits-cfg into {DEMO_OUTPUT} (replaced each run)", cmd_demo,
            lambda: _erase_groups(method), _methods_epilog())
    command("eval", "evaluate against the base: --model DIR --baseline BASE [--suite S.yaml] --output DIR",
            cmd_eval, _eval_groups)
    p = command("attack", "attack an erased model (and its base and a retrained reference): --model DIR --attack NAME "
                "(--forget LABELS | --forget-prompts TEXT) --output DIR", cmd_attack, attack_help_groups,
                attacks_epilog(LIST_HELP))
    p.add_argument("--config", help="YAML: run keys, and one mapping of settings per attack (cce: {steps: 200})")
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
    p = command("train-base", "train the bundled base models: train-base digits | digits-t2i (bundled recipes: "
                "digits, digits-t2i; digits-t2i --exclude seven trains the reference without sevens)", cmd_train_base,
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
    argv = normalise_flags(list(sys.argv[1:] if argv is None else argv))
    command = argv[0] if argv else ""
    try:
        parser = build_parser(method_in(argv) if command in ("erase", "demo") else "salun")
        args, rest = parser.parse_known_args(argv)
        return args.func(args, rest)
    except ErasekitError as exc:
        print(f"erasekit {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("erasekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
