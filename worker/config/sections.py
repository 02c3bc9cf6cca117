"""Typed sections: a dataclass is a TOML table's schema — its fields the keys, their types,
defaults and `setting(min=, max=, choices=)` the rules — and `build_section` checks a table
against it, naming the file, section and key of anything wrong (`ConfigError`). The
worker's own sections (config/__init__.py) and every plugin's `Config` are checked by this code.
"""
from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import MISSING, field, fields, is_dataclass
from typing import Any


class ConfigError(ValueError):
    """Bad configuration: the message names the file, section and key. Exit code 2.

    Always one line (a value or key quoted in it may hold line breaks), cut to a few
    hundred characters.
    """

    def __init__(self, message: object = "") -> None:
        text = " ".join(str(message).split())
        super().__init__(text if len(text) <= 500 else text[:499] + "…")


def setting(default: Any = MISSING, *, min: float | None = None, max: float | None = None,
            choices: tuple | None = None, secret: bool = False, doc: str = "") -> Any:
    """A config field with its validation rules."""
    meta = {"min": min, "max": max, "choices": choices, "secret": secret, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def build_section(cls: type, data: dict[str, Any], where: str) -> Any:
    """Validate `data` against dataclass `cls`; raise `ConfigError` naming `where` and the key."""
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    known = {f.name: f for f in fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in known:
            raise ConfigError(f"{where} {toml_name(key)}: unknown key (known: {', '.join(known) or 'none'})")
    values = {}
    for name, f in known.items():
        if name in data:
            values[name] = _check(data[name], hints[name], f.metadata, f"{where} {name}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"{where} {name}: required")
    try:
        return cls(**values)
    except ConfigError as exc:  # cross-field checks in __post_init__ say "key: problem"
        raise ConfigError(f"{where} {exc}") from None


def _check(value: Any, hint: Any, meta: Any, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: must be a list, got {_kind(value)}")
        return [_check(v, args[0] if args else Any, {}, f"{where}[{i}]") for i, v in enumerate(value)]
    if is_dataclass(hint):  # a nested table, e.g. each of [[plugins.x.targets]]
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a table, got {_kind(value)}")
        return build_section(hint, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: must be a table, got {_kind(value)}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is not Any and (not isinstance(value, hint) or hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: must be {_kind_name(hint)}, got {_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number")
    low, high, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    if low is not None and value < low or high is not None and value > high:
        raise ConfigError(f"{where}: must be between {low:g} and {high:g}, got {value}")
    if choices and value not in choices:
        raise ConfigError(f"{where}: must be one of {', '.join(map(repr, choices))}, got {quoted(value)}")
    return value


def toml_name(key: str) -> str:
    """A key or section name as written in TOML: bare when it can be, else quoted and cut."""
    return key if _BARE_KEY.fullmatch(key) else quoted(key)


def quoted(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,60}")


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _kind_name(hint: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))
