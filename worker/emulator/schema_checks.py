"""The checks the emulator's schemas (state file, faults) are written with: each names the key path
of the first problem in a one-line StateError."""
from __future__ import annotations

import re
from typing import Any, Callable


class StateError(ValueError):
    """An invalid state file; str() is one line: `<source>: <key path>: <problem>`."""


class SchemaChecker:
    """Collects nothing: the first problem raises, so the message names one path."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, msg: str) -> None:
        raise StateError(f"{self.source}: {path}: {msg}" if path else f"{self.source}: {msg}")

    def obj(self, value: Any, path: str, required: tuple, optional: tuple) -> dict:
        if not isinstance(value, dict):
            self.fail(path, "must be an object")
        for key in required:
            if key not in value:
                self.fail(join_path(path, key), "is required")
        allowed = set(required) | set(optional)
        for key in value:
            if key not in allowed:
                self.fail(join_path(path, key), "unknown key (allowed: %s)" % ", ".join(sorted(allowed)))
        return value

    def string(self, value: Any, path: str, pattern: re.Pattern | None = None, hint: str = "") -> str:
        if not isinstance(value, str) or not value:
            self.fail(path, "must be a non-empty string")
        if pattern is not None and not pattern.match(value):
            self.fail(path, f"must match {hint or pattern.pattern}")
        return value

    def choice(self, value: Any, path: str, choices: tuple) -> str:
        if value not in choices:
            self.fail(path, "must be one of %s (got %r)" % (", ".join(choices), value))
        return value

    def integer(self, value: Any, path: str, lo: int, hi: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, "must be an integer")
        if value < lo or (hi is not None and value > hi):
            self.fail(path, f"must be between {lo} and {hi}" if hi is not None else f"must be >= {lo}")
        return value

    def number(self, value: Any, path: str, lo: float, hi: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, "must be a number")
        if value < lo or (hi is not None and value > hi):
            self.fail(path, f"must be between {lo} and {hi}" if hi is not None else f"must be >= {lo}")
        return float(value)

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, "must be true or false")
        return value

    def items(self, value: Any, path: str, each: Callable[[Any, str], Any], non_empty=False) -> list:
        if not isinstance(value, list):
            self.fail(path, "must be a list")
        if non_empty and not value:
            self.fail(path, "must not be empty")
        return [each(item, f"{path}[{i}]") for i, item in enumerate(value)]

    def unique(self, values: list, path: str, key: str) -> None:
        seen = set()
        for i, v in enumerate(values):
            if v[key] in seen:
                self.fail(f"{path}[{i}].{key}", f"duplicate {v[key]!r}")
            seen.add(v[key])


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
