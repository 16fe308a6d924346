"""Dataclass configs filled from YAML files and `--key value` flags, in the manner of trl's parser.

A YAML file holds flat keys. Each key belongs to exactly one of the dataclasses being filled
(for `erase`: the run config, the method's config and the eval config). Flags override YAML keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

_MISSING = object()


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping of config keys. YAML holds data only (`safe_load`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass the path of a YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}; fix its syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def parse_cli_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """Turn `--key value`, `--key=value` and bare `--flag` tokens into {key: raw string | True}."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise ConfigError(f"unexpected argument '{token}'; options are written --key value")
        key, eq, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if not eq:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value, i = tokens[i + 1], i + 1
            else:
                value = True
        out[key] = value
        i += 1
    return out


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    inner, optional = _unwrap_optional(tp)
    if typing.get_origin(inner) is list:
        name = f"list of {typing.get_args(inner)[0].__name__}"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} or null" if optional else name


def _yaml_or_raw(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _list_from_strings(raw: str | list[str], item_tp: Any) -> list:
    """List flags: repeated flags give one item each, and a value written as a YAML list ("[3, 4]") gives
    its items. A string item is kept whole, commas included ("a photo, at night" is one prompt); numbers
    may also be given as "3,4"."""
    out: list = []
    for item in raw if isinstance(raw, list) else [raw]:
        if not isinstance(item, str):
            out.append(item)
        elif item.strip().startswith("["):
            parsed = _yaml_or_raw(item)
            out.extend(parsed if isinstance(parsed, list) else [parsed])
        elif item_tp is str:
            out.append(item)
        else:
            out.extend(_yaml_or_raw(part) for part in item.split(",") if part.strip())
    return out


def _from_string(raw: str | list[str], tp: Any) -> Any:
    """Interpret a flag's string (or repeated flags' strings) the way YAML would, except for string fields."""
    inner, optional = _unwrap_optional(tp)
    if typing.get_origin(inner) is list:
        return _list_from_strings(raw, typing.get_args(inner)[0])
    if isinstance(raw, list):  # a scalar key given twice: the last one wins, as with any flag
        raw = raw[-1]
    if inner is str:  # "none"/"null" unset an optional string; a plain string field takes them as words
        return None if optional and raw.lower() in ("none", "null") else raw
    return _yaml_or_raw(raw)


def coerce_value(name: str, value: Any, tp: Any, source: str) -> Any:
    """Check `value` against annotation `tp`, converting only where no information is lost."""
    inner, optional = _unwrap_optional(tp)
    bad = ConfigError(
        f"{source}: '{name}' must be a {_type_name(tp)}, got {value!r} ({type(value).__name__}); "
        f"fix the value of '{name}'"
    )
    if value is None:
        if optional:
            return None
        raise bad
    if typing.get_origin(inner) is list:
        (item_tp,) = typing.get_args(inner)
        items = value if isinstance(value, list) else [value]
        return [coerce_value(name, item, item_tp, source) for item in items]
    if inner is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if inner is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if inner is str:
        if isinstance(value, str):
            return value
        raise bad
    return value


def build_configs(
    classes: Mapping[str, type], values: Mapping[str, Any], source: str, from_cli: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Fill each dataclass in `classes` from the flat mapping `values`.

    Args:
        classes: role name -> dataclass type. Their field names must not overlap.
        values: flat key -> value (YAML values, or raw strings for keys listed in `from_cli`).
        source: where the values came from, for error messages.
        from_cli: keys whose values are raw command-line strings.
    """
    owner: dict[str, tuple[str, dataclasses.Field, Any]] = {}
    for role, cls in classes.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                owner[f.name] = (role, f, hints[f.name])
    kwargs: dict[str, dict[str, Any]] = {role: {} for role in classes}
    for key, value in values.items():
        if key not in owner:
            close = difflib.get_close_matches(key, owner, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(owner))}"
            raise ConfigError(f"{source}: unknown config key '{key}'; {hint}")
        role, f, tp = owner[key]
        if key in from_cli and isinstance(value, (str, list)):
            value = _from_string(value, tp)
        kwargs[role][key] = coerce_value(key, value, tp, source)
    return {role: cls(**kwargs[role]) for role, cls in classes.items()}


def describe_field(f: dataclasses.Field, tp: Any) -> str:
    """`help [type; default: value]` for `--help`."""
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
    else:
        default = "required"
    text = f.metadata.get("help", "")
    extra = "; repeat the flag or write a YAML list" if typing.get_origin(_unwrap_optional(tp)[0]) is list else ""
    return f"{text} [{_type_name(tp)}; default: {'null' if default is None else default}{extra}]".replace("%", "%%")


def field_types(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """The init fields of a config dataclass with their resolved annotations."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def check(condition: bool, name: str, value: Any, requirement: str) -> None:
    """Raise a `ConfigError` naming the field, the bad value and what it must be."""
    if not condition:
        raise ConfigError(f"'{name}' is {value!r} but must be {requirement}; fix '{name}' in the config or flags")
