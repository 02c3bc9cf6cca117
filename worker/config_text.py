"""How config errors quote what they found: key names as written in TOML, values cut
short, types in words."""
from __future__ import annotations

import re
from typing import Any


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
