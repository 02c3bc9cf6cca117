"""The config's error, `ConfigError`, and how config errors quote what they found: key names
as written in TOML, values cut short, types in words."""
from __future__ import annotations

import re
from typing import Any


class ConfigError(ValueError):
    """Bad configuration: the message names the file, section and key. Exit code 2.

    Always one line (a value or key quoted in it may hold line breaks), cut to a few
    hundred characters.
    """

    def __init__(self, message: object = "") -> None:
        text = " ".join(str(message).split())
        super().__init__(text if len(text) <= 500 else text[:499] + "…")


def _name(key: str) -> str:
    """A key or section name as written in TOML: bare when it can be, else quoted and cut."""
    return key if _BARE_KEY.fullmatch(key) else _quote(key)


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,60}")


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _kind_name(hint: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))
