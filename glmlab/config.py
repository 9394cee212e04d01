"""One way to declare and validate a config: each dataclass field carries its help text and its check.

    rank: int = checked_field(16, help="LoRA rank r.", check=integer(1))

`problems(config)` walks a config (its nested sections and lists of sections too) and returns every
invalid field at once, each named by its dotted path and saying what it must be
(`adapter.rank=0: must be an integer >= 1`); `raise_if_problems` turns them into one error, so a user
fixes a file in one pass. A field whose default is None accepts None (it means "unset").
Checks that span several fields live in a config's `extra_problems()` method: it returns
(field, message) pairs ("" for the config itself), or lines that already name their field.

Configs read from YAML go through `build_section` / `coerce_sections` (mappings become sections, unknown
keys are named with the likely field) and `apply_overrides` (dotted `--set` paths such as
`adapter.rank` or `metrics.0.name`). Recipes, suites, generation and server settings all use this module.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, dataclass
from typing import Any

from glmlab.errors import ConfigError

__all__ = [
    "Check",
    "InvalidConfig",
    "apply_overrides",
    "boolean",
    "build_section",
    "checked_field",
    "coerce_sections",
    "field_paths",
    "field_values",
    "integer",
    "mapping",
    "mapping_problems",
    "number",
    "one_of",
    "problems",
    "raise_if_problems",
    "regex",
    "suggest",
    "text",
    "text_list",
    "unknown_keys",
]


class InvalidConfig(ConfigError):
    """A config with invalid fields; `problems` lists each one, named by its dotted path."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class Check:
    """A field's rule: `test(value)` is true for a valid value; `expected` says what a valid value is
    (a text, or a function of the bad value, e.g. to suggest the closest name)."""

    test: Callable[[Any], Any]
    expected: str | Callable[[Any], str]

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError, re.error):  # a value of the wrong type is simply invalid
            return False

    def describe(self, value: Any) -> str:
        return self.expected(value) if callable(self.expected) else self.expected


def checked_field(
    default: Any = MISSING,
    *,
    help: str,
    check: Callable[[Any], Any] | None = None,
    expected: str | None = None,
    default_factory: Any = MISSING,
    **metadata: Any,
) -> Any:
    """A dataclass field with its help text and check in metadata (other metadata, e.g. a CLI flag
    name, is kept). `expected` replaces the check's own description when given."""
    if check is not None and not isinstance(check, Check):
        check = Check(check, expected or "valid")
    elif check is not None and expected is not None:
        check = Check(check.test, expected)
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={"help": help, "check": check, **metadata}
    )


# ---- checks --------------------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a finite float (not a bool, nan or inf)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def integer(low: int | None = None) -> Check:
    """An int (not a bool), at least `low` when given."""
    if low is None:
        return Check(is_int, "an integer")
    return Check(lambda value: is_int(value) and value >= low, f"an integer >= {low}")


def number(low: float | None = None, high: float | None = None, *, bounds: str = "[]") -> Check:
    """An int or float within `low`..`high`; `bounds` says which ends are closed ("[)" is low <= x < high)."""
    low_ok = (lambda v: v >= low) if bounds[0] == "[" else (lambda v: v > low)
    high_ok = (lambda v: v <= high) if bounds[1] == "]" else (lambda v: v < high)
    if high is None:
        expected = f"a number {'>=' if bounds[0] == '[' else '>'} {low}"
        return Check(lambda v: is_number(v) and low_ok(v), expected)
    if low is None:
        expected = f"a number {'<=' if bounds[1] == ']' else '<'} {high}"
        return Check(lambda v: is_number(v) and high_ok(v), expected)
    expected = f"a number in {bounds[0]}{low}, {high}{bounds[1]}"
    return Check(lambda v: is_number(v) and low_ok(v) and high_ok(v), expected)


def one_of(choices: Collection[Any] | Callable[[], Collection[Any]]) -> Check:
    """One of `choices` (a collection, or a function returning one: a registry imported when needed)."""

    def names() -> list[Any]:
        return list(choices() if callable(choices) and not isinstance(choices, Collection) else choices)

    def expected(value: Any) -> str:
        known = names()
        return f"one of {', '.join(map(str, known))}" + suggest(str(value), [str(name) for name in known])

    return Check(lambda value: value in names(), expected)


boolean = Check(lambda value: isinstance(value, bool), "true or false")
mapping = Check(lambda value: isinstance(value, Mapping), "a mapping")


def text(non_empty: bool = True) -> Check:
    if non_empty:
        return Check(lambda value: isinstance(value, str) and bool(value.strip()), "a non-empty string")
    return Check(lambda value: isinstance(value, str), "a string")


def text_list(what: str = "names") -> Check:
    """A list of non-empty strings."""
    return Check(
        lambda value: isinstance(value, list) and all(isinstance(item, str) and item for item in value),
        f"a list of {what}",
    )


regex = Check(lambda value: re.compile(value) is not None, "a valid regular expression")


# ---- validation ----------------------------------------------------------------------------------


def problems(config: Any, prefix: str = "") -> list[str]:
    """Every invalid field of `config` and of its sections, as 'path=value: must be ...' lines."""
    found: list[str] = []
    for item in dataclasses.fields(config):
        found += _value_problems(item, getattr(config, item.name), prefix + item.name)
    extra = getattr(config, "extra_problems", None)
    for problem in extra() if extra is not None else []:
        # (field, message) pairs, or whole lines that already name their field relative to `config`
        found.append(
            prefix + problem if isinstance(problem, str) else f"{_join(prefix, problem[0])}: {problem[1]}"
        )
    return found


def mapping_problems(
    cls: type, values: Mapping[str, Any], prefix: str = "", kind: str = "field"
) -> list[str]:
    """The problems of plain `values` for config class `cls`: unknown keys and each given field's check
    (for a section kept as a mapping, e.g. a suite's generation settings)."""
    by_name = {item.name: item for item in dataclasses.fields(cls)}
    found = unknown_keys(cls, values, prefix, kind=kind)
    for key, value in values.items():
        if key in by_name:
            found += _value_problems(by_name[key], value, prefix + key)
    return found


def raise_if_problems(
    found: list[str], source: str | None = None, error: type[Exception] = InvalidConfig
) -> None:
    """Raise one error listing every problem (nothing when there is none); `source` names the config."""
    if not found:
        return
    head = f"{source}: " if source else ""
    if len(found) == 1:
        message = f"{head}{found[0]}."
    else:
        message = f"{head}{len(found)} invalid field(s):\n  - " + "\n  - ".join(found)
    raise error(message, found) if error is InvalidConfig else error(message)


def _value_problems(item: dataclasses.Field, value: Any, path: str) -> list[str]:
    found = []
    check = item.metadata.get("check")
    unset = value is None and item.default is None
    if check is not None and not unset and not check(value):
        found.append(f"{path}={_short(value)}: must be {check.describe(value)}")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        found += problems(value, path + ".")
    elif isinstance(value, list):
        for index, element in enumerate(value):
            if dataclasses.is_dataclass(element) and not isinstance(element, type):
                found += problems(element, f"{path}[{index}].")
    return found


def _join(prefix: str, name: str) -> str:
    return prefix + name if name else prefix.rstrip(".")


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


# ---- building configs from plain data --------------------------------------------------------------


def section_type(item: dataclasses.Field) -> type | None:
    """The config class of a section field (its default_factory is a dataclass), else None."""
    factory = item.default_factory
    return factory if isinstance(factory, type) and dataclasses.is_dataclass(factory) else None


def build_section(cls: type, values: Any, path: str, found: list[str]) -> Any:
    """A `cls` section from a mapping; unknown keys and non-mappings are added to `found` (the section is
    then built from what is usable, so the remaining fields are still checked)."""
    if isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        found.append(f"{path}: expected a mapping of {cls.__name__} fields, got {type(values).__name__}")
        values = {}
    found += unknown_keys(cls, values, path + ".")
    known = {item.name: item for item in dataclasses.fields(cls)}
    kwargs = {key: value for key, value in values.items() if key in known}
    for name, value in kwargs.items():
        nested = section_type(known[name])
        if nested is not None:
            kwargs[name] = build_section(nested, value, f"{path}.{name}", found)
    missing = [
        name
        for name, item in known.items()
        if name not in kwargs and item.default is MISSING and item.default_factory is MISSING
    ]
    found += [f"{path}.{name}: missing" for name in missing]
    if missing:
        return None
    return cls(**kwargs)


def coerce_sections(config: Any) -> list[str]:
    """Turn mappings given for `config`'s section fields into sections (in place); return the problems."""
    found: list[str] = []
    for item in dataclasses.fields(config):
        cls = section_type(item)
        if cls is not None:
            setattr(
                config, item.name, build_section(cls, getattr(config, item.name), item.name, found) or cls()
            )
    return found


def unknown_keys(
    cls: type,
    values: Mapping[str, Any],
    prefix: str = "",
    *,
    kind: str = "field",
    aliases: Mapping[str, str] | None = None,
) -> list[str]:
    """One problem per key of `values` that is no field of `cls`, suggesting the likely one.

    aliases: other names to suggest from, each shown as its target (e.g. a leaf name -> its dotted path)."""
    known = [item.name for item in dataclasses.fields(cls)]
    candidates = {name: name for name in known} | dict(aliases or {})
    return [
        f"{prefix}{key}: unknown {kind}{suggest(str(key), candidates)}; known: {', '.join(known)}"
        for key in values
        if key not in known
    ]


def suggest(key: str, known: Collection[str] | Mapping[str, str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or ''; a mapping suggests its value."""
    names = known if isinstance(known, Mapping) else {name: name for name in known}
    close = difflib.get_close_matches(key, list(names), n=1)
    return f" (did you mean {names[close[0]]!r}?)" if close else ""


def field_values(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf field of a config as {dotted path: value}, sections walked (mapping values stay whole)."""
    values: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if section_type(item) is not None and dataclasses.is_dataclass(value):
            values |= field_values(value, f"{prefix}{item.name}.")
        else:
            values[prefix + item.name] = value
    return values


def field_paths(cls: type, prefix: str = "") -> dict[str, str]:
    """Every leaf field of a config class as {dotted path: help text}, sections walked."""
    paths: dict[str, str] = {}
    for item in dataclasses.fields(cls):
        nested = section_type(item)
        if nested is not None:
            paths |= field_paths(nested, f"{prefix}{item.name}.")
        else:
            paths[prefix + item.name] = item.metadata.get("help", "")
    return paths


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `data` with `{"a.b.c": value}` set; list items by index (`metrics.0.options`).

    A value given for a whole section (`{"data": {...}}`) replaces that section."""
    result = copy.deepcopy(dict(data))
    for dotted, value in overrides.items():
        node: Any = result
        keys = dotted.split(".")
        for key in keys[:-1]:
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            elif isinstance(node, dict):
                node = node.setdefault(key, {})
            else:
                raise ConfigError(f"override {dotted!r}: {key!r} is not a field or list index there.")
        if isinstance(node, list) and keys[-1].isdigit() and int(keys[-1]) < len(node):
            node[int(keys[-1])] = value
        elif isinstance(node, dict):
            node[keys[-1]] = value
        else:
            raise ConfigError(f"override {dotted!r}: cannot set {keys[-1]!r} there.")
    return result
