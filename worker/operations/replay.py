"""`ecs-worker replay`: play saved events through the same parse and dispatch path as `run`.

Any file content is fine: a record that is not an event (not UTF-8, not JSON, nested too
deeply, too big) is reported as `invalid` with its file and line, and the replay goes on.
Exit codes: 0 when every event was handled or ignored; 1 when any failed, was invalid or
was still deferred; 2 for a bad config, a plugin that fails to start, or an unreadable file.
"""
from __future__ import annotations

import io
import json
import sys
import time
from dataclasses import dataclass
from typing import Iterator, TextIO

from ..text import one_line
from ..plugin_host.dispatch import Dispatcher
from ..plugin_host.outcomes import DEFERRED, EXIT_FAILURE, EXIT_OK, FAILED, INVALID, Result, invalid
from ..events.event import parse_event

MAX_DEFERRAL_ROUNDS = 10  # a plugin that defers forever must not hang a replay


@dataclass(frozen=True)
class Item:
    where: str  # "file:line 3" — for error messages
    body: str


def read_items(name: str, stream: TextIO) -> Iterator[Item]:
    """Yield bodies from a JSON object, a JSON array, or JSON Lines (one body per line)."""
    text = stream.read()
    stripped = text.strip()
    if not stripped:
        return
    if stripped[0] in "[{":
        try:
            doc = json.loads(stripped)
        except Exception:  # not one JSON document (or a hostile one): read it as JSON Lines
            doc = None
        if isinstance(doc, dict):
            yield Item(name, stripped)
            return
        if isinstance(doc, list):
            for i, element in enumerate(doc):
                try:
                    body = element if isinstance(element, str) else json.dumps(element)
                except Exception as exc:  # e.g. nested too deeply to write back
                    body = f"<unreadable element: {one_line(exc)}>"
                yield Item(f"{name}[{i}]", body)
            return
    # Lines end at "\n" only: str.splitlines() would also split at U+2028 and other
    # separators that JSON allows, raw, inside a string.
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if line.strip():
            yield Item(f"{name}:{number}", _unwrap_dead_letter(line))


def _unwrap_dead_letter(line: str) -> str:
    """A `dead-letter.jsonl` record replays as the message body it holds, so a fixed
    plugin can be tried on exactly what failed."""
    if not line.startswith('{"time"'):
        return line
    try:
        record = json.loads(line)
    except Exception:  # not a record after all: the line is the body
        return line
    if isinstance(record, dict) and isinstance(record.get("body"), str) and "message_id" in record:
        return record["body"]
    return line


def replay_one(dispatcher: Dispatcher, item: Item, elapse_deferrals: bool) -> Result:
    try:
        event = parse_event(item.body)
    except Exception as exc:  # InvalidEvent, whatever the body
        result = invalid(f"{item.where}: {exc}")
        dispatcher.run_on_settled(None, result, wait=True)
        return result
    result = dispatcher.dispatch(event)
    actions = list(result.actions)
    for _ in range(MAX_DEFERRAL_ROUNDS):
        if result.outcome != DEFERRED:
            break
        delay = result.defer_seconds or 0.0
        if not elapse_deferrals:  # else the deferral counts as elapsed: the plan is reported now
            time.sleep(delay)
        resume = result.resume()
        resume.update({name: since - delay if since is not None else None
                       for name, since in result.retry_plugins.items()})
        previous = result.plugins
        result = dispatcher.dispatch(event, resume)
        result.plugins = {**previous, **result.plugins}
        actions += result.actions
    result.actions = actions
    dispatcher.run_on_settled(event, result, wait=True)
    return result


def run_replay(files: list[str], dispatcher: Dispatcher, *, elapse_deferrals: bool, as_json: bool,
               out: TextIO = sys.stdout) -> int:
    """Replay every file; return 0 when all were handled or ignored, else 1."""
    ok = True
    for name in files:
        if name == "-":
            items = list(read_items("<stdin>", _text(sys.stdin.buffer.read())))
        else:
            with open(name, "rb") as stream:  # any bytes: undecodable ones fail their own record
                items = list(read_items(_printable(name), _text(stream.read())))
        for item in items:
            try:
                result = replay_one(dispatcher, item, elapse_deferrals)
            except Exception as exc:  # a bug, not the record's fault: still that record's row
                result = Result(FAILED, error=f"{item.where}: {one_line(exc)}")
            ok &= result.outcome not in (FAILED, INVALID, DEFERRED)
            print(json.dumps(result.to_json()) if as_json else _human(result), file=out, flush=True)
    return EXIT_OK if ok else EXIT_FAILURE


def _text(data: bytes) -> io.StringIO:
    return io.StringIO(data.decode("utf-8", "surrogateescape"))


def _printable(name: str) -> str:
    """A file name as it can be printed (undecodable bytes shown as escapes)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _human(result: Result) -> str:
    ev = result.event
    head = f"{result.outcome:<8} " + (f"{ev.name} {ev.instance_id or '-'} ({ev.id})" if ev else "")
    acts = "".join(f"\n           {a.plugin}: {a.action} {a.target}"
                   f"{' [dry-run]' if a.dry_run else ''} {a.result}" for a in result.actions)
    return head + (f"{' ' if ev else ''}{result.error}" if result.error else "") + acts
