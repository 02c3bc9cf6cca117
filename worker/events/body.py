"""A message body to a read-only JSON object, whatever the bytes: raw JSON or base64 of it
(base64 broken into lines with LF or CRLF, as the `base64` tool and MIME encoders write it;
either may start with a UTF-8 byte order mark, as some Windows tools write), at most 64 KiB, UTF-8, nested at most MAX_DEPTH deep, no lone surrogates, no NaN. Anything
else raises `InvalidEvent` saying what is wrong and where. (`events.py` reads the event in it.)
"""
from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import sys
from typing import Any

MAX_BODY_BYTES = 64 * 1024  # the MNS message size limit
MAX_DEPTH = 64  # objects and arrays nested deeper than this are refused


class InvalidEvent(ValueError):
    """A body that is not an ECS event; the message says what is wrong and where."""


class FrozenDict(dict):
    """A JSON object a plugin can read but not change, so the next plugin sees the same
    event. `copy.copy` / `copy.deepcopy` / `dict(x)` give ordinary, mutable dicts."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("event data is read-only; change a copy (copy.deepcopy(event.raw))")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __copy__(self) -> dict:
        return dict(self)

    def __deepcopy__(self, memo: dict) -> dict:
        return {k: copy.deepcopy(v, memo) for k, v in self.items()}

    def __reduce__(self) -> tuple:
        return dict, (dict(self),)


class FrozenList(list):
    """A JSON array a plugin can read but not change (see `FrozenDict`)."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("event data is read-only; change a copy (copy.deepcopy(event.raw))")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = clear = extend = insert = pop = remove = reverse = sort = _read_only

    def __copy__(self) -> list:
        return list(self)

    def __deepcopy__(self, memo: dict) -> list:
        return [copy.deepcopy(v, memo) for v in self]

    def __reduce__(self) -> tuple:
        return list, (list(self),)


def freeze(value: Any, depth: int = 0) -> Any:
    """`value` with every object and array read-only; refuses documents deeper than
    MAX_DEPTH (no ECS event is; a deep one would only exhaust a plugin's recursion)."""
    kind = type(value)
    if kind is not dict and kind is not list:
        return value
    if depth >= MAX_DEPTH:
        raise InvalidEvent(f"body is nested deeper than {MAX_DEPTH} levels")
    if kind is dict:
        return FrozenDict({k: freeze(v, depth + 1) if type(v) in _CONTAINERS else v
                           for k, v in value.items()})
    return FrozenList([freeze(v, depth + 1) if type(v) in _CONTAINERS else v for v in value])


_CONTAINERS = (dict, list)
_JSON_START = frozenset(b'{["-0123456789')
_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LINE_BREAKS = re.compile(rb"\r?\n")  # base64 wrapped at 76 columns (MIME) or any width
BOM = b"\xef\xbb\xbf"
_BASE64_BOM = base64.b64encode(BOM)  # b"77u/": starts with a digit, yet no JSON text does


def _without_bom(text: bytes) -> bytes:
    return text[len(BOM):].lstrip() if text.startswith(BOM) else text


def decode_body(body: bytes | str) -> dict[str, Any]:
    if isinstance(body, str):
        try:  # a str from `replay` carries undecodable bytes as surrogate escapes: undo them
            body = body.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            body = body.encode("utf-8", "surrogatepass")  # and fails the UTF-8 check below
    elif not isinstance(body, (bytes, bytearray, memoryview)):
        raise InvalidEvent(f"body must be bytes or str, not {type(body).__name__}")
    body = bytes(body)
    if len(body) > MAX_BODY_BYTES:
        raise InvalidEvent(f"body is {len(body)} bytes, over the 64 KiB message limit")
    text = _without_bom(body.strip())
    if not text:
        raise InvalidEvent("body is empty")
    # JSON as sent, or base64 of it (a default MNS queue delivers base64). Which one is
    # decided by the first byte: base64 of a JSON object starts "ey", never a JSON start,
    # and the JSON literals true/false/null are read as JSON, not as base64 of garbage;
    # "77u/" (base64 of a byte order mark) starts with a digit but is no JSON.
    if (text[0] in _JSON_START and not text.startswith(_BASE64_BOM)) or text in (b"true", b"false", b"null"):
        return _json_object(text, "body")
    try:
        inner = _without_bom(base64.b64decode(_LINE_BREAKS.sub(b"", text), validate=True).strip())
    except (binascii.Error, ValueError):
        raise InvalidEvent("body is neither JSON nor base64") from None
    if not inner:
        raise InvalidEvent("base64 body decodes to nothing")
    try:
        inner.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"body is not JSON, and its base64 decodes to binary data, not UTF-8 text "
                           f"(byte {exc.start})") from None
    return _json_object(inner, "base64-decoded body")


def _json_object(raw: bytes, where: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"{where} is not UTF-8 (byte {exc.start})") from None
    try:
        doc = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"{where} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidEvent(f"{where} is JSON nested too deeply") from None
    except InvalidEvent as exc:
        raise InvalidEvent(f"{where} is not JSON: {exc}") from None
    except ValueError as exc:  # e.g. an integer over the 4,300-digit conversion limit
        if "digits" in str(exc):
            raise InvalidEvent(f"{where} holds an integer too long to convert (over "
                               f"{_int_digits_limit()} digits)") from None
        raise InvalidEvent(f"{where} is not JSON: {' '.join(str(exc).split())[:120]}") from None
    if not isinstance(doc, dict):
        kind = json_type(doc)
        raise InvalidEvent(f"{where} is JSON null, not an object" if doc is None
                           else f"{where} is a JSON {kind}, not an object")
    if _LONE_SURROGATE_ESCAPE.search(text):  # "\ud800" unpaired: not text; cannot be stored or sent
        try:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidEvent(f"{where} holds a lone UTF-16 surrogate "
                               f"\\u{ord(exc.object[exc.start]):04x}: not valid Unicode text") from None
    return freeze(doc)


def _int_digits_limit() -> int:
    return getattr(sys, "get_int_max_str_digits", lambda: 4300)()  # Python >= 3.10.7


def _no_constant(name: str) -> Any:
    raise InvalidEvent(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # NaN and Infinity are not JSON


def json_type(value: Any) -> str:
    for kind, name in ((dict, "object"), (list, "array"), (str, "string"), (bool, "boolean")):
        if isinstance(value, kind):  # FrozenDict and FrozenList too
            return name
    return "null" if value is None else "number"
