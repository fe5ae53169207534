"""Dataclasses filled from YAML mappings, with errors that name the file and the field.

Model presets and training configs share this: nested dataclasses and lists of them are built from
their type hints, unknown keys are errors (a typo never falls back to a default silently), and
`key.sub=value` overrides from the command line are applied to the mapping before it is built.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and field."""


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the {what}: {_one_line(err)}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of fields")
    return data


def _one_line(err: Exception) -> str:
    """PyYAML's message in one line: it spans several, with the source quoted and a caret under the spot."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{err.context + ': ' if err.context else ''}{err.problem}{where}"
    return " ".join(str(err).split())


def build(cls: type, data: Any, origin: str, prefix: str = "") -> Any:
    """An instance of dataclass `cls` from a mapping, nested dataclasses included."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: {prefix.rstrip('.') or 'the config'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"{origin}: unknown field(s) {', '.join(prefix + k for k in unknown)}; "
            f"known: {', '.join(prefix + k for k in names)}"
        )
    return cls(**{name: _value(hints[name], value, origin, prefix + name) for name, value in data.items()})


def _value(hint: Any, value: Any, origin: str, name: str) -> Any:
    hint = _without_none(hint) if value is not None else hint
    if dataclasses.is_dataclass(hint):
        return build(hint, value, origin, prefix=f"{name}.")
    container = typing.get_origin(hint)
    if container is list and dataclasses.is_dataclass(element := typing.get_args(hint)[0]):
        if not isinstance(value, list):
            raise ConfigError(f"{origin}: {name} must be a list")
        return [build(element, item, origin, prefix=f"{name}[{i}].") for i, item in enumerate(value)]
    if container is tuple and value is not None:
        return tuple(value)
    if hint in (int, float, bool, str):
        return _scalar(hint, value, origin, name)
    return value


def _scalar(kind: type, value: Any, origin: str, name: str) -> Any:
    """A YAML scalar as the field's type; YAML 1.1 reads `1e-4` as a string, so numbers given as text convert."""
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind is str and isinstance(value, bool):  # the word is gone by now: yes/no/on/off/true/false all read so
        raise ConfigError(
            f"{origin}: {name} must be str, got {value!r}: YAML reads an unquoted no, off, yes or on as "
            f'{str(value).lower()}; quote the word (e.g. {name}: "no")'
        )
    raise ConfigError(f"{origin}: {name} must be {kind.__name__}, got {value!r}")


def _without_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return options[0] if len(options) == 1 else hint
    return hint


def to_plain(value: Any) -> Any:
    """A dataclass (or anything nested) as plain dicts and lists, ready for YAML or JSON."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str], origin: str = "command line") -> dict[str, Any]:
    """`a.b=value` strings applied to a mapping; values are parsed as YAML (`lr=1e-4`, `tasks=[caption]`)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"{origin}: override {override!r} is not KEY=VALUE")
        target = data
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{origin}: override {override!r}: {part} is not a mapping")
        try:
            target[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            problem = _one_line(err)
            raise ConfigError(f"{origin}: override {override!r}: the value is not valid YAML: {problem}") from err
    return data
