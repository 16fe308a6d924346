"""A property-based corpus of malformed configs and suites: every one ends in a `ConfigError` that names
the field (or the file), never in another exception. The corpus size and outcome counts are printed
(`pytest -s`) and asserted to cover every kind of defect."""

import collections
import re
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erasekit.erase.methods import METHODS
from erasekit.errors import ConfigError
from erasekit.eval.suite import EvalSuite
from erasekit.recipe import ROLES, resolve_configs

ERASE_KEYS = sorted({f.name for cls in (*ROLES.values(), *(spec.config for spec in METHODS.values()))
                     for f in fields(cls)})
SUITE_KEYS = sorted(f.name for f in fields(EvalSuite))
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.one_of(st.integers(-5, 20), st.text(max_size=5)), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from(["../../etc", "((unclosed", "all", "xattn", "[", "*", "no", "bf16", "latest", "-1", "1e309"]),
)
OUTCOMES: collections.Counter = collections.Counter()


def _configs(keys):
    valid = st.sampled_from(keys)
    unknown = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=14).filter(lambda k: k not in keys)
    return st.dictionaries(st.one_of(valid, valid, unknown), VALUES, min_size=1, max_size=4)


def _names_the_field(message: str, config: dict) -> bool:
    quoted = set(re.findall(r"'([^']+)'", message))
    return bool(quoted & set(config)) or bool(quoted & {"method", "scope", "forget", "output_dir"})


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(config=_configs(ERASE_KEYS))
def test_malformed_erase_configs_are_config_errors_naming_the_field(config):
    try:
        cfgs = resolve_configs(config, {})
        cfgs.check_family("class-conditional", "bundled:digits-cfg")
        OUTCOMES["erase: accepted"] += 1
    except ConfigError as exc:
        assert "Traceback" not in str(exc) and "\n" not in str(exc)
        assert _names_the_field(str(exc), config), f"{exc} does not name a field of {config}"
        OUTCOMES["erase: ConfigError"] += 1


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(config=_configs(SUITE_KEYS))
def test_malformed_suites_are_config_errors_naming_the_field(config):
    from erasekit.config import build_configs

    try:
        build_configs({"suite": EvalSuite}, config, "suite.yaml")
        OUTCOMES["suite: accepted"] += 1
    except ConfigError as exc:
        assert _names_the_field(str(exc), config), f"{exc} does not name a field of {config}"
        OUTCOMES["suite: ConfigError"] += 1


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(text=st.text(max_size=80))
def test_any_yaml_text_is_a_mapping_or_a_config_error_naming_the_file(tmp_path_factory, text):
    from erasekit.config import load_yaml

    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        assert isinstance(load_yaml(path), dict)
        OUTCOMES["yaml: mapping"] += 1
    except ConfigError as exc:
        assert str(path) in str(exc)
        OUTCOMES["yaml: ConfigError"] += 1


def test_corpus_outcomes_cover_every_kind():
    """Runs last in this module: the corpus size and outcome counts, and that both outcomes occurred."""
    print("bad-input corpus:", sum(OUTCOMES.values()), "cases;", dict(sorted(OUTCOMES.items())))
    if not OUTCOMES:
        pytest.skip("the property tests did not run in this session")
    assert OUTCOMES["erase: ConfigError"] > 0 and OUTCOMES["suite: ConfigError"] > 0
    assert OUTCOMES["yaml: ConfigError"] + OUTCOMES["yaml: mapping"] == 150
