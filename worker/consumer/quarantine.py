"""Quarantine: a crash suspect (`crashes.py`) runs in a child process of its own.

A message that was running when the worker died may be what killed it — or the worker
was killed from outside (an operator's `kill -9`, the OOM killer), which looks the
same. So a death of the worker charges nobody; its suspects run next in a forked child
with a fresh dispatcher. If the child dies (a signal, `os._exit`, a segfault) or
overruns its time bound, that message alone caused it: the parent — the service —
lives on and the message fails (an attempt; dead-lettered after `max_attempts`, still
a suspect until then). A child that finishes hands its `Result` back over a pipe.
"""
from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import time
from typing import Callable, Mapping

from ..plugin_host.dispatch import Dispatcher
from ..events.event import Event
from ..plugin_host.outcomes import FAILED, Result
from .signals import RELOAD, STATUS, STOP, STRAY

log = logging.getLogger("ecs_worker.runner")

SLACK_SECONDS = 5.0  # the child's bound beyond its plugins' own time limits
_CHILD_BROKEN = 70  # the child could not even report (EX_SOFTWARE)


def bound(call_timeout: float) -> float | None:
    """How long a suspect's child may take: its hooks' and pending work's limits, plus slack."""
    return 3 * call_timeout + SLACK_SECONDS if call_timeout else None


def run(dispatcher: Dispatcher, event: Event, resume: Mapping[str, float | None] | None,
        forked: Callable[[], None], close: tuple[int, ...] = ()) -> tuple[Result, bool]:
    """Dispatch `event` in a child process; returns (its result, whether the child crashed:
    died or overran). The caller forks with nothing else running (a lock another thread
    held at the fork would stay held in the child); `forked` runs in the parent right after.
    `close`: descriptors the child must not keep (the crash journal, whose lock would
    otherwise outlive the parent)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only this thread exists here
        for fd in (read, *close):
            os.close(fd)
        _child(dispatcher, event, resume, write)
    forked()
    os.close(write)
    try:
        data, timed_out = _read_all(read, bound(dispatcher.call_timeout))
    finally:
        os.close(read)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if status == 0 and data:
        try:
            return pickle.loads(data), False  # our own child's: trusted
        except Exception as exc:  # noqa: B902 - a torn pipe: the child's failure
            why = f"its report could not be read ({type(exc).__name__})"
    elif timed_out:
        why = f"it overran {bound(dispatcher.call_timeout):g}s and was killed"
    elif os.WIFSIGNALED(status):
        why = f"it was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    else:
        why = f"it exited with code {os.waitstatus_to_exitcode(status)}"
    log.error("event %s crashed its quarantine process: %s; charged an attempt", event.id, why)
    return Result(FAILED, event, error=f"crashed the worker, then its quarantine process ({why})"), True


def _child(dispatcher: Dispatcher, event: Event, resume, write: int) -> None:
    code = _CHILD_BROKEN
    try:
        for sig in (*STOP, RELOAD, STATUS, *STRAY):  # the parent's handlers only record flags
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the parent
        result = dispatcher.fresh().dispatch(event, resume)
        data = pickle.dumps(result)
        while data:
            data = data[os.write(write, data):]
        code = 0
    except BaseException as exc:  # noqa: B902 - report nothing: the parent counts it a crash
        log.error("quarantine process for event %s: %s", event.id, exc)
    finally:
        os._exit(code)  # no atexit, no joins: stuck plugin threads end here


def _read_all(fd: int, timeout: float | None) -> tuple[bytes, bool]:
    """Everything the child writes until it closes the pipe; (data, True) on timeout."""
    chunks: list[bytes] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and wait <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
