"""A command's settings from a JSON or YAML file whose keys are the flag names, every value checked against its type.

`HfArgumentParser.parse_yaml_file` hands a file's values to the settings classes unchecked (`steps_per_task: "ten"`
would reach the training loop), so the file is read here: the file must hold a mapping of known keys, and each value
must fit its field's type (`int`, `float`, `bool`, `str`, `Literal`, `list[...]`, `... | None`) before the settings
classes, which check the ranges, see it. A number written as a string is read as one for `float` fields only, since
YAML reads `1e-4` (no dot) as a string. Every problem is a ValueError naming the file and the key.
"""

import json
import reprlib
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


class _Mismatch(Exception):
    """A value does not fit a type (turned into a ValueError that says what was expected)."""


def read_config_file(path: str | Path, settings: tuple[type, ...]) -> list[Any]:
    """The settings objects (one per dataclass of `settings`) that the JSON or YAML file at `path` describes."""
    path = Path(path)
    values = _load(path)
    known = {setting.name: dataclass_type for dataclass_type in settings for setting in fields(dataclass_type)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}. Known keys: {', '.join(sorted(known))}.")
    objects = []
    for dataclass_type in settings:
        hints = typing.get_type_hints(dataclass_type)
        mappings = getattr(dataclass_type, "CONFIG_MAPPINGS", ())
        given = {setting.name: values[setting.name] for setting in fields(dataclass_type) if setting.name in values}
        checked = {name: _checked(path, name, hints[name], value, name in mappings) for name, value in given.items()}
        try:
            objects.append(dataclass_type(**checked))
        except ValueError as error:  # a value of the right type out of range, as the settings class says
            raise ValueError(f"{path}: {error}") from None
    return objects


def _load(path: Path) -> dict[str, Any]:
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise ValueError(f"Config file {path} must end in {', '.join(CONFIG_SUFFIXES)}.")
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist.")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})."
            ) from None
    else:
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {_yaml_problem(error)}.") from None
    if not isinstance(values, dict):
        found = "nothing" if values is None else f"a {type(values).__name__}"
        raise ValueError(f"{path} must hold a mapping of setting names to values, not {found}.")
    return values


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    return problem if mark is None else f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


def _checked(path: Path, name: str, annotation: Any, value: Any, mapping: bool) -> Any:
    """`value` as field `name` takes it; `mapping`: a list of strings may also be given as {key: value} (or
    {key: [value, ...]}, read as `key=value,...`)."""
    if mapping and isinstance(value, dict):
        value = [f"{key}={','.join(map(str, item)) if isinstance(item, list) else item}" for key, item in value.items()]
    try:
        return _convert(annotation, value)
    except _Mismatch:
        raise ValueError(
            f"{path}: {name}: {reprlib.repr(value)} is invalid: expected {_describe(annotation)}."
        ) from None


def _convert(annotation: Any, value: Any) -> Any:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        for option in (argument for argument in arguments if argument is not type(None)):
            try:
                return _convert(option, value)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is typing.Literal:
        if any(type(value) is type(allowed) and value == allowed for allowed in arguments):
            return value
        raise _Mismatch
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch
        return [_convert(arguments[0], item) for item in value]
    if annotation is float:
        return _as_float(value)
    if annotation in (bool, str) and not isinstance(value, annotation):
        raise _Mismatch
    if annotation is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise _Mismatch
    return value


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Mismatch
    try:
        return float(value)
    except ValueError:
        raise _Mismatch from None


def _describe(annotation: Any) -> str:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [_describe(argument) for argument in arguments if argument is not type(None)]
        return " or ".join(options + (["null"] if type(None) in arguments else []))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(allowed) for allowed in arguments)
    if origin is list:
        return f"a list of {_describe(arguments[0]).removeprefix('an ').removeprefix('a ')}s"
    names = {int: "an int", float: "a number", bool: "true or false", str: "a string"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))
