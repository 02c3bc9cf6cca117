"""Crash isolation: a crash costs an attempt only to the message that caused it.

A plugin can kill the whole process (`os._exit`, a segfault in a C extension, the OOM
killer). Which message did it? The one running when it happened — so each worker keeps
a journal, `state_dir/running-<pid>-<n>.jsonl`, of the messages whose plugins are
running: a line when one starts, a line when its outcome is in. The file is mapped
into memory (`MAP_SHARED`, its room written out up front), so appending a line is a copy
into the page cache under a lock no system call is made in: it survives the process
dying (not the machine) as a `write` would and needs no store transaction, and the
handler threads never queue on the lock behind a `write` that gave the GIL up.

Each live worker holds an exclusive `flock` on its own journal; a journal nobody holds
belongs to a dead worker. `recover` (at start-up, and now and then by any worker on the
host) reads such a journal and tells the store:

- the messages running when it died are *suspects*: from now on each runs in a
  quarantine child process (`quarantine.py`), forked while nothing else runs (`Gate`),
  until it finishes once;
- nobody is charged: an outside `kill -9` or the OOM killer looks just like a crash a
  message caused. A suspect whose quarantine process dies is charged an attempt there,
  and after `max_attempts` such crashes it is dead-lettered — the service lives on.

So a healthy batch-mate of a crashing message is never charged, and neither is a
message that was running when the worker was killed from outside: it finishes in
quarantine. A message that kills the worker costs the service one restart, ever.
"""
from __future__ import annotations

import fcntl
import itertools
import json
import logging
import mmap
import os
import threading
from collections import Counter
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from pathlib import Path
from typing import Callable

from ..text import printable

log = logging.getLogger("ecs_worker.crashes")

PREFIX, SUFFIX = "running-", ".jsonl"
COMPACT_BYTES = 1 << 20  # room for lines in a journal file; full, it is rewritten with only what runs now
_serial = itertools.count(1)


class Journal:
    """This process's journal of running messages (see the module doc)."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / f"{PREFIX}{os.getpid()}-{next(_serial)}{SUFFIX}"
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()
        self._fd, self._map, self._end = -1, None, 0
        self._create(b"")

    def _create(self, text: bytes) -> None:
        """A new journal file holding `text` and room for `COMPACT_BYTES` more, locked, then
        renamed into place (a scanner never sees it unlocked, nor half-written); it replaces
        the current one, whose lock holds until then."""
        temporary = self.path.with_name(f".{self.path.name}.new")
        size = len(text) + COMPACT_BYTES
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        mapped = None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The room written out now (zeros, which a reader stops at): a full disk fails
            # here, not as a SIGBUS when `_append` first touches a page.
            if os.write(fd, text + bytes(COMPACT_BYTES)) != size:
                raise OSError(f"{temporary}: short write")
            mapped = mmap.mmap(fd, size)
            os.replace(temporary, self.path)
        except BaseException:
            self._release(fd, mapped)
            raise
        old = self._fd, self._map
        self._fd, self._map, self._end = fd, mapped, len(text)
        self._release(*old)

    def started(self, key: str) -> None:
        line = _line("S", key)
        with self._lock:
            self._running[key] += 1
            self._append(line)

    def ended(self, key: str) -> None:
        line = _line("E", key)
        with self._lock:
            self._running[key] -= 1
            if self._running[key] <= 0:
                del self._running[key]
            self._append(line)

    def _append(self, line: bytes) -> None:  # with self._lock held, `_running` already updated
        if self._map is None:
            return
        if self._end + len(line) > len(self._map):
            # Full: a new file holding what runs now, which this line's change is part of.
            self._create(b"".join(_line("S", k) for k, n in self._running.items() for _ in range(n)))
            return
        self._map[self._end:self._end + len(line)] = line
        self._end += len(line)

    @staticmethod
    def _release(fd: int, mapped: mmap.mmap | None) -> None:
        if mapped is not None:
            mapped.close()
        if fd >= 0:
            os.close(fd)

    def descriptors(self) -> tuple[int, ...]:
        """The open journal's descriptor, for a forked child to close."""
        return (self._fd,) if self._fd >= 0 else ()

    def close(self) -> None:
        """A clean stop: nothing is running, the journal goes."""
        with self._lock:
            if self._fd >= 0:
                try:
                    self.path.unlink()
                except OSError:
                    pass
                self._release(self._fd, self._map)
                self._fd, self._map = -1, None


def _line(op: str, key: str) -> bytes:
    # `S "<key>"`: the key JSON-quoted with ASCII escapes (the C encoder: a few hundred ns).
    return f"{op} {encode_basestring_ascii(key)}\n".encode("ascii")


def running_at_death(text: str) -> list[str]:
    """The keys started and not ended in a journal's text (a torn last line is ignored, and
    so is the room left after the last line: NUL bytes)."""
    running: Counter[str] = Counter()
    for line in text.partition("\0")[0].splitlines():
        op, _, quoted = line.partition(" ")
        try:
            key = json.loads(quoted)
        except ValueError:
            continue  # a torn last line
        if not isinstance(key, str):
            continue
        if op == "S":
            running[key] += 1
        elif op == "E" and running[key] > 0:
            running[key] -= 1
    return [k for k, n in running.items() for _ in range(n)]


def recover(state_dir: str | Path, apply: Callable[[list[str], list[str]], None],
            own: Journal | None = None) -> int:
    """Find the journals of dead workers in `state_dir`; for each, call
    `apply(charged, suspects)` and remove it. Returns how many were found."""
    found = 0
    for path in sorted(Path(state_dir).glob(f"{PREFIX}*{SUFFIX}")):
        if own is not None and path == own.path:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # another worker took it first
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its worker is alive
            try:  # still the file at that name? (another scanner may have removed it)
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    continue
            except OSError:
                continue
            text = os.read(fd, 1 << 24).decode("ascii", "replace")
            # Remove before applying: a crash between them loses a charge (one more crash
            # to find the culprit), never charges twice.
            path.unlink()
        finally:
            os.close(fd)
        found += 1
        suspects = running_at_death(text)
        if suspects:  # a kill from outside looks the same: nobody is charged (quarantine.py)
            log.warning("a worker died (journal %s) while %d message(s) ran: %s; each runs in a "
                        "quarantine process from now on", path.name, len(suspects),
                        ", ".join(printable(k[:80]) for k in suspects[:5]))
        apply([], suspects)
    return found


class Gate:
    """Messages run side by side, except suspects: a suspect waits until nothing else runs,
    then forks its quarantine process alone (a lock held by another thread at the fork
    would stay held in the child); while a suspect waits or forks, nothing else starts.

    The common case (no suspect anywhere) takes one plain lock and never waits or wakes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._running = 0
        self._solo = False  # a suspect runs
        self._waiting = 0  # threads waiting in `enter` (suspects or not)
        self._waiting_solo = 0

    def enter(self, suspect: bool, stop: threading.Event, poll: float = 0.2) -> bool:
        """Wait for the turn; False when `stop` was set meanwhile (nothing entered)."""
        with self._lock:
            if not suspect and not self._solo and not self._waiting_solo:  # the fast path
                self._running += 1
                return True
            self._waiting += 1
            self._waiting_solo += suspect
            try:
                while (self._running or self._solo) if suspect else (self._solo or self._waiting_solo):
                    if stop.is_set():
                        return False
                    self._cond.wait(poll)
                self._solo = self._solo or suspect
                self._running += 1
                return True
            finally:
                self._waiting -= 1
                self._waiting_solo -= suspect

    def leave(self, suspect: bool) -> None:
        with self._lock:
            self._running -= 1
            if suspect:
                self._solo = False
            if self._waiting:
                self._cond.notify_all()

    @property
    def running(self) -> int:
        return self._running


RECOVER_EVERY = 30.0  # seconds between looks for the journals of dead workers sharing state_dir


def keep_recovering(recover: Callable[[], None], closing: threading.Event, every: float = RECOVER_EVERY) -> None:
    """The recover thread: every `every` seconds until `closing`, `recover()` — a sibling
    worker sharing this host's state_dir may have died meanwhile (the start recovers once)."""
    while not closing.wait(every):
        recover()
