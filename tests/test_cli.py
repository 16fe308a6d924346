import json
import subprocess
import sys
from pathlib import Path

import pytest

from erasekit.cli import main
from erasekit.errors import ConfigError

CONFIG = Path(__file__).parents[1] / "configs" / "digits.yaml"


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run_bad(argv, tmp_path, capsys):
    before = _snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("erasekit ") and "Traceback" not in err[0]
    assert _snapshot(tmp_path) == before, "a failed command must leave nothing written"
    return err[0]


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--ratoi", "0.3"], "unknown config key 'ratoi'"),
        (["--max-steps", "many"], "'max_steps' must be a int"),
        (["--learning-rate", "fast"], "'learning_rate' must be a float"),
        (["--ratio", "1.5"], "'ratio' is 1.5 but must be in (0, 1]"),
        (["--ratio", "0"], "'ratio' is 0.0 but must be in (0, 1]"),
        (["--forget", "12"], "unknown class label 12"),
        (["--pretrained-model-name-or-path", "/nonexistent/model"], "does not exist"),
        (["--scope", "xattn"], "matches no parameter"),
        (["--mask-path", "/nonexistent/mask.safetensors"], "mask file"),
    ],
)
def test_bad_erase_input_is_one_line_exit_2_and_writes_nothing(flags, fragment, tmp_path, capsys):
    out = tmp_path / "erased"
    line = _run_bad(["erase", "--config", str(CONFIG), "--output-dir", str(out), *flags], tmp_path, capsys)
    assert fragment in line
    assert not out.exists()


def test_existing_output_dir_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "erased"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = _run_bad(["erase", "--config", str(CONFIG), "--output-dir", str(out)], tmp_path, capsys)
    assert "already exists" in line and "--overwrite" in line
    assert (out / "keep.txt").read_text() == "mine"


def test_eval_needs_a_model_and_names_missing_paths(tmp_path, capsys):
    assert "'model' is missing" in _run_bad(["eval"], tmp_path, capsys)
    line = _run_bad(["eval", "--model", str(tmp_path / "nope"), "--output", str(tmp_path / "r")], tmp_path, capsys)
    assert "does not exist" in line


def test_unknown_base_recipe(tmp_path, capsys):
    assert "unknown base recipe" in _run_bad(["train-base", "cifar"], tmp_path, capsys)


def test_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "erasekit.cli", "erase", "--config", str(CONFIG), "--output-dir",
         str(tmp_path / "o"), "--ratio", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "erasekit erase: error: 'ratio' is 2.0 but must be in (0, 1]; fix 'ratio' in the config or flags"
    ]


def test_eval_and_grid_commands_write_their_outputs(tmp_path, capsys):
    small = ["--samples-per-class", "2", "--num-inference-steps", "3", "--eval-batch-size", "20"]
    assert main(["eval", "--model", "bundled:digits-cfg", "--baseline", "bundled:digits-cfg", "--forget", "4",
                 "--output", str(tmp_path / "report"), *small]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    classes = report["metrics"]["classes"]
    assert classes["base"]["UA"] == classes["model"]["UA"]  # same model, same seeds
    assert report["settings"]["suite"]["forget"] == [4]
    assert main(["grid", "--model", "bundled:digits-cfg", "--columns", "3", "--num-inference-steps", "3",
                 "--output", str(tmp_path / "g.png")]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "g.png").size[1] > 10 * 16
    assert "already exists" in _run_bad(["grid", "--model", "bundled:digits-cfg", "--output", str(tmp_path / "g.png")],
                                        tmp_path, capsys)


def test_class_conditional_suite_file(tmp_path):
    suite = Path(__file__).parents[1] / "configs" / "eval" / "digits.yaml"
    assert main(["eval", "--model", "bundled:digits-cfg", "--baseline", "bundled:digits-cfg", "--suite", str(suite),
                 "--samples-per-class", "2", "--num-inference-steps", "3", "--forget", "5",
                 "--output", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["settings"]["suite"]["forget"] == [5] and report["settings"]["suite"]["samples_per_class"] == 2


def test_bad_apply_push_and_suite_input(tmp_path, capsys):
    delta = tmp_path / "delta.safetensors"
    line = _run_bad(["apply", "bundled:digits-cfg", str(delta), str(tmp_path / "out")], tmp_path, capsys)
    assert "delta file" in line and "does not exist" in line
    line = _run_bad(["apply", str(tmp_path / "nobase"), str(delta), str(tmp_path / "out")], tmp_path, capsys)
    assert "does not exist" in line
    line = _run_bad(["push", str(tmp_path / "missing"), "--repo-id", "org/name"], tmp_path, capsys)
    assert "is not a directory" in line
    line = _run_bad(["eval", "--model", "bundled:digits-cfg", "--suite", str(tmp_path / "none.yaml")], tmp_path, capsys)
    assert "config file" in line and "does not exist" in line
    suite = Path(__file__).parents[1] / "configs" / "eval" / "digits-t2i.yaml"
    line = _run_bad(["eval", "--model", "bundled:digits-cfg", "--baseline", "bundled:digits-cfg", "--suite", str(suite),
                     "--output", str(tmp_path / "r")], tmp_path, capsys)
    assert "'prompts_csv' gives prompts, but the model is class-conditional" in line
    line = _run_bad(["eval", "--model", "bundled:digits-t2i", "--baseline", "bundled:digits-cfg", "--forget", "1",
                     "--output", str(tmp_path / "r")], tmp_path, capsys)
    assert "the model is text-to-image (StableDiffusionPipeline) but the baseline is class-conditional" in line


@pytest.mark.parametrize("command", ["erase", "demo", "eval", "grid", "train-base", "memorization"])
def test_help_lists_every_config_key_with_type_default_and_help(command, capsys):
    from erasekit.cli import (
        _erase_groups,
        _eval_groups,
        _grid_groups,
        _memorization_groups,
        _train_base_groups,
    )

    groups = {"erase": _erase_groups, "demo": _erase_groups, "eval": _eval_groups, "grid": _grid_groups,
              "train-base": _train_base_groups, "memorization": _memorization_groups}[command]()
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for title, items in groups:
        assert title in text
        for f, *_ in items:
            assert f"--{f.name.replace('_', '-')}" in text, f.name
    if command == "erase":
        assert "--learning-rate FLOAT AdamW learning rate [float; default: 0.0001]" in text
        assert "--forget-prompts VALUE prompts of the concept(s) [list of str; default: []" in text
        assert "--ratio FLOAT fraction of in-scope weights in the mask" in text
        assert "a prompt with a comma stays one prompt" in text


def test_list_flags_keep_commas_inside_prompts_and_take_repeats():
    from erasekit.cli import _overrides, build_parser
    from erasekit.recipe import resolve_configs

    argv = ["erase", "--forget-prompts", "a nude person, oil painting", "--forget-prompts", "a nude statue",
            "--anchor_prompts", "[a clothed person, a dressed statue]", "--forget", "3", "--forget", "4",
            "--output-dir", "o"]
    args, rest = build_parser().parse_known_args(argv)
    cfg = resolve_configs(None, *_overrides(args, rest))
    assert cfg.concept.forget_prompts == ["a nude person, oil painting", "a nude statue"]
    assert cfg.concept.anchor_prompts == ["a clothed person", "a dressed statue"]
    assert cfg.data.forget == [3, 4]


def test_keys_of_the_other_model_family_are_refused(tmp_path, capsys):
    from tiny import tiny_sd_pipeline

    sd = tmp_path / "sd"
    tiny_sd_pipeline().save_pretrained(sd)
    capsys.readouterr()
    sd_recipe = Path(__file__).parents[1] / "configs" / "sd-nudity.yaml"
    line = _run_bad(["erase", "--config", str(sd_recipe), "--pretrained-model-name-or-path", str(sd),
                     "--output-dir", str(tmp_path / "o"), "--forget", "3"], tmp_path, capsys)
    # the recipe gives forget_prompts, so the message does not ask for them
    assert "'forget' applies to class-conditional models only" in line and "forget_prompts" not in line
    line = _run_bad(["erase", "--pretrained-model-name-or-path", str(sd), "--output-dir", str(tmp_path / "o"),
                     "--samples-per-class", "3"], tmp_path, capsys)
    assert "'samples_per_class' applies to class-conditional models only" in line and "'forget_prompts'" in line
    line = _run_bad(["erase", "--config", str(CONFIG), "--output-dir", str(tmp_path / "o"),
                     "--forget-prompts", "a church"], tmp_path, capsys)
    assert "'forget_prompts' applies to text-to-image models" in line
    line = _run_bad(["erase", "--config", str(CONFIG), "--output-dir", str(tmp_path / "o"),
                     "--mask-path", str(tmp_path / "m.safetensors"), "--saliency-passes", "2"], tmp_path, capsys)
    assert "'saliency_passes' computes a mask, but 'mask_path' gives a saved one" in line


def test_the_demo_runs_the_shipped_digits_recipe():
    from dataclasses import asdict

    from erasekit.cli import DEMO_SETTINGS
    from erasekit.recipe import resolve_configs

    demo = resolve_configs(None, {"output_dir": "x", **DEMO_SETTINGS})
    recipe = resolve_configs(Path(__file__).parents[1] / "configs" / "digits.yaml", {"output_dir": "x", "forget": [0]})
    from erasekit.pipelines.adapters.class_conditional import ClassConditionalAdapter

    for role in ("run", "method"):
        assert asdict(getattr(demo, role)) == asdict(getattr(recipe, role)), role
    # null sampling settings take the family's defaults, which the recipe writes out
    assert demo.eval.for_family(ClassConditionalAdapter) == recipe.eval.for_family(ClassConditionalAdapter)


def test_text_to_image_erase_takes_the_shared_sampling_keys_for_its_own_evaluation(tmp_path):
    """README: num_inference_steps (and guidance_scale, eval_batch_size) mean the same in an erase config
    and a suite; on a text-to-image erase they set its own evaluation, and a recipe's eval_suite is read
    relative to the recipe."""
    from erasekit.evaluation import text_erase_suite
    from erasekit.recipe import resolve_configs

    recipe = Path(__file__).parents[1] / "configs" / "sd-nudity.yaml"
    cfg = resolve_configs(recipe, {"output_dir": str(tmp_path / "o"), "num_inference_steps": "3"},
                          frozenset({"output_dir", "num_inference_steps"}))
    cfg.check_family("text-to-image", "sd14")  # accepted, not refused as a class-conditional key
    suite = text_erase_suite(cfg, {"forget_prompts": ["a nude person"], "retain_prompts": ["a person"]})
    assert suite.num_inference_steps == 3 and suite.metrics == ["nudenet"] and suite.nudenet_threshold == 0.6
    assert suite.prompts == ["a nude person"] and suite.retain_prompts == ["a person"]
    assert Path(cfg.run.eval_suite) == Path(__file__).parents[1] / "configs" / "eval" / "nudity.yaml"


def test_a_recipe_for_another_method_sets_its_keys_aside_with_one_notice(tmp_path, caplog):
    import logging

    from erasekit.recipe import resolve_configs

    with caplog.at_level(logging.WARNING, logger="erasekit"):
        cfg = resolve_configs(CONFIG, {"output_dir": str(tmp_path / "o"), "method": "esd"}, frozenset({"method"}))
    notices = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    assert len(notices) == 1 and "ratio" in notices[0] and "'esd'" in notices[0]
    from erasekit.erase.methods import METHODS

    assert isinstance(cfg.method, METHODS["esd"][0]) and not hasattr(cfg.method, "ratio")
    assert cfg.method.alpha == 10.0  # a key ESD has too is the recipe's, not set aside
    with pytest.raises(ConfigError, match="'ratio' is a setting of .*salun.*, not of method 'esd'"):
        resolve_configs(CONFIG, {"output_dir": "o", "method": "esd", "ratio": "0.3"}, frozenset({"method", "ratio"}))


def test_bad_dtype_and_eval_suite_flags_are_one_line_errors(tmp_path, capsys):
    line = _run_bad(["erase", "--config", str(CONFIG), "--output-dir", str(tmp_path / "o"), "--dtype", "fp8"],
                    tmp_path, capsys)
    assert "'dtype' is 'fp8' but must be one of fp32, fp16, bf16 or null" in line
    line = _run_bad(["erase", "--config", str(CONFIG), "--output-dir", str(tmp_path / "o"), "--eval-suite",
                     str(tmp_path / "none.yaml")], tmp_path, capsys)
    assert "'eval_suite'" in line and "not a file" in line
    line = _run_bad(["grid", "--model", "bundled:digits-cfg", "--dtype", "half", "--output", str(tmp_path / "g.png")],
                    tmp_path, capsys)
    assert "'dtype' is 'half'" in line


@pytest.mark.parametrize("method, shown", [
    ("esd", ["--alpha FLOAT weight of a retain diffusion loss (0: ESD as published) [float; default: 0.0]",
             "[str; default: xattn]", "method esd: negative guidance distilled into the weights"]),
    ("oneshot", ["--ratio FLOAT", "[float; default: 0.005]", "method oneshot: one Fisher-selected perturbation"]),
    ("salun", ["[float; default: 0.5]", "--saliency-passes INT", "[str; default: all]"]),
])
def test_erase_help_shows_the_chosen_methods_own_keys_and_defaults(method, shown, capsys):
    with pytest.raises(SystemExit):
        main(["erase", "--method", method, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for piece in shown:
        assert piece in text, piece
    if method == "esd":
        assert "--ratio" not in text and "--saliency-passes" not in text  # salun's, not ESD's
    for name in ("salun", "rl", "esd", "ga", "uce", "oneshot", "retrain", "finetune"):  # every method, described
        assert f" {name} " in text


def test_a_recipes_method_picks_the_help_and_an_unknown_method_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["erase", "--config", str(CONFIG.parent / "digits-oneshot.yaml"), "--help"])
    assert "[float; default: 0.005]" in " ".join(capsys.readouterr().out.split())
    line = _run_bad(["erase", "--method", "nope", "--help"], tmp_path, capsys)
    assert "'method' is 'nope'; registered methods: esd, finetune" in line


def test_erase_with_another_method_than_the_recipes(tmp_path, capsys):
    assert main(["erase", "--config", str(CONFIG), "--method", "esd", "--forget", "3", "--max-steps", "2",
                 "--evaluate", "false", "--output-dir", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert out.count("set aside for method 'esd'") == 1 and "ratio" in out
    record = json.loads((tmp_path / "o" / "erasure.json").read_text())
    assert record["method"] == "esd" and record["config"]["method"]["alpha"] == 10.0  # the recipe's alpha
    assert record["method_description"].startswith("negative guidance distilled")
