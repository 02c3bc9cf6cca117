"""What one hook call came to: a plugin's return value as a `PluginResult`, or a `Failure`
when it did not return; and the arguments an implementation takes. (Used by `dispatch.py`
and the lifecycle completion step, `completion.py`.)"""
from __future__ import annotations

from typing import Any

from .outcomes import HANDLED, IGNORED, PluginResult
from ..text import one_line


class Failure:
    """What a hook call came to when it did not return: the one-line reason, and the
    exception (for debug logs) when there was one."""

    __slots__ = ("detail", "exc", "timed_out", "waited")

    def __init__(self, detail: str, exc: BaseException | None, timed_out: bool = False,
                 waited: bool = False) -> None:
        self.detail, self.exc, self.timed_out = detail, exc, timed_out
        self.waited = waited  # never started: the plugin's threads were all busy or stuck


def status_of(name: str, value: Any) -> PluginResult:
    """A returned value: `None`/`False` is ignored, anything else handled (a text, cut, says how)."""
    if value is None or value is False:
        return PluginResult(name, IGNORED)
    return PluginResult(name, HANDLED, one_line(value) if isinstance(value, str) else "")


def args_for(impl: Any, **available: Any) -> dict[str, Any]:
    """pluggy lets an implementation take any subset of the spec's arguments."""
    return {name: available[name] for name in impl.argnames}
