"""The message key: what the store remembers a message by (dedupe, attempts, resume).

- a valid event: `"<id>|<name>|<state>"` — the same `id` can carry several notifications
  (an O&M event's `Scheduled`, then `Executed` or `Avoided`), so the notification's name
  and state are part of it. The state is `Instance:StateChange`'s `content.state`, else an
  O&M notification's `content.eventStatus`, else empty;
- a body that is not an event: `"mns:<MNS message id>"`;
- a message re-sent to wait longer (`deferred.py`) keeps the key it travels with.

Keys are bounded and always storable: a part holding `|`, a control character, a lone
surrogate or more than `MAX_KEY_CHARS` characters makes the key `"sha256:<hex>"` of the
parts instead (unambiguous: such a key has no `|`; `mns:` keys have none either).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

MAX_KEY_CHARS = 300


def event_key(event: Any) -> str:
    """The key of a parsed event (`events.Event`)."""
    state = event.state
    if state is None:
        content = _content(event)
        status = content.get("eventStatus") if isinstance(content, dict) else None
        state = status if isinstance(status, str) else None
    return _join(event.id or "", event.name or "", state or "")


def message_key(message_id: str) -> str:
    """The key of a body that is not an event: its MNS message id."""
    return safe_key(f"mns:{message_id}")


def safe_key(key: str) -> str:
    """`key` as it is when it is storable (valid UTF-8, printable, short), else its hash."""
    if _plain(key, allow_bar=True):
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _join(*parts: str) -> str:
    if all(_plain(p, allow_bar=False) for p in parts):
        key = "|".join(parts)
        if len(key) <= MAX_KEY_CHARS:
            return key
    text = json.dumps(list(parts), ensure_ascii=True)  # escapes surrogates: always encodable
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def _plain(text: str, allow_bar: bool) -> bool:
    if not isinstance(text, str) or len(text) > MAX_KEY_CHARS or (not allow_bar and "|" in text):
        return False
    if not text.isprintable():  # control characters, NUL, lone surrogates (category Cs)
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _content(event: Any) -> Any:
    try:
        return event.content
    except Exception:  # a hostile raw document must not stop keying
        return {}
