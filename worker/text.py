"""The one text-shortening helper: anything (an exception, a plugin's answer, a body) to one
short line for a log, an error or a replay row — never a whole body, never a traceback."""
from __future__ import annotations

from typing import Any

ONE_LINE_CHARS = 300


def one_line(value: Any, limit: int = ONE_LINE_CHARS) -> str:
    """An exception as `Type: first line`, anything else as its first line; at most `limit`
    characters, "…" marking a cut (also when lines were dropped)."""
    try:
        text = str(value)
    except BaseException:  # a hostile __str__
        text = "<unprintable>"
    lines = [line.strip() for line in text.strip().splitlines()]
    first = next((line for line in lines if line), "")
    if isinstance(value, BaseException):
        name = type(value).__name__
        out = f"{name}: {first}" if first else name
    else:
        out = first
    if len(out) > limit or len([line for line in lines if line]) > 1:
        out = out[:limit - 1].rstrip() + "…"
    return out


def printable(text: str) -> str:
    """`text` with every control character and lone surrogate escaped (`\\n`, `\\ud800`): a
    key or id in a log line can neither forge a line nor break a UTF-8 log stream."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
