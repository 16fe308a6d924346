import pytest

from erasekit.config import build_configs, parse_cli_overrides
from erasekit.erase.methods import SalUnConfig
from erasekit.errors import ConfigError
from erasekit.recipe import EraseConfig, resolve_configs


def test_cli_overrides_are_typed_by_field():
    values = parse_cli_overrides(["--ratio", "0.3", "--forget", "3,4", "--overwrite", "--scope=attn"])
    cfg = resolve_configs({"output_dir": "x"}, values, frozenset(values))
    assert cfg.method.ratio == 0.3 and cfg.method.scope == "attn"
    assert cfg.data.forget == [3, 4] and cfg.run.overwrite is True


def test_none_and_null_are_words_for_a_plain_string_flag_and_unset_an_optional_one():
    values = parse_cli_overrides(["--null-target", "none", "--mask-path", "null", "--null-gate", "posterior"])
    cfg = resolve_configs({"output_dir": "x"}, values, frozenset(values))
    assert cfg.method.null_target == "none" and cfg.method.mask_path is None and cfg.method.null_gate == "posterior"


def test_flags_override_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: a\nratio: 0.5\nlearning_rate: 1e-4\n")
    cfg = resolve_configs(path, {"ratio": "0.2"}, frozenset({"ratio"}))
    assert cfg.method.ratio == 0.2 and cfg.train.learning_rate == 1e-4 and cfg.run.output_dir == "a"


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"output_dir": "x", "ratoi": 0.3}, "unknown config key 'ratoi'; did you mean 'ratio'"),
        ({"output_dir": "x", "max_steps": "many"}, "'max_steps' must be a int"),
        ({"output_dir": "x", "max_steps": 1.5}, "'max_steps' must be a int"),
        ({"output_dir": "x", "ratio": 0.0}, "'ratio' is 0.0 but must be in (0, 1]"),
        ({"output_dir": "x", "ratio": 1.5}, "'ratio' is 1.5 but must be in (0, 1]"),
        ({"output_dir": "x", "mixed_precision": "fp8"}, "'mixed_precision' is 'fp8'"),
        ({"output_dir": "x", "method": "nope"}, "registered methods"),
        ({}, "'output_dir' is None"),
    ],
)
def test_bad_values_are_rejected_with_the_field_named(values, fragment):
    with pytest.raises(ConfigError) as info:
        resolve_configs(values, {})
    assert fragment in str(info.value)


def test_salun_config_rejects_bad_saliency_fields():
    with pytest.raises(ConfigError, match="saliency_passes"):
        SalUnConfig(saliency_passes=0)
    with pytest.raises(ConfigError, match="alpha"):
        SalUnConfig(alpha=-1.0)


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        resolve_configs(path, {})
    path.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_configs(path, {})


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_configs(tmp_path / "none.yaml", {})


def test_build_configs_splits_keys_between_dataclasses():
    built = build_configs({"run": EraseConfig, "method": SalUnConfig}, {"output_dir": "o", "ratio": 0.1}, "t")
    assert built["run"].output_dir == "o" and built["method"].ratio == 0.1


def test_the_null_branch_probe_is_asked_for_by_its_word_on_the_command_line():
    from erasekit.attacks.settings import resolve_attack_configs

    values = parse_cli_overrides(["--model", "bundled:digits-cfg", "--attack", "trajectory", "--trajectory-branch", "null",
                                  "--forget", "3", "--output", "out"])
    _, configs = resolve_attack_configs(None, values, frozenset(values))
    assert configs["trajectory"].branch == "null"
