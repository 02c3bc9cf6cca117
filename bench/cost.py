"""What MNS bills, and what the events wait: the worker's MNS requests per 1,000 events and
the enqueue-to-handled lag at steady rates (one message per send, as CloudMonitor sends),
for a backlog, and for a lone event after a quiet spell; and the idle worker.

The lag is measured by a plugin that compares the time it runs to the `sentAt` the bench
put in the event. Requests are counted by the emulator (`kit.mns_billed`).
"""
from __future__ import annotations

import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from kit import (LOG_ONLY, base_state, cpu_seconds, emulator, event_body, mns_billed, percentile,
                 plugins_toml, rss_mb, wait_until, worker, worker_config)

LAG_PLUGIN = """import time
from ecs_worker import hookimpl
_out = open({out!r}, "a", buffering=1)

@hookimpl
def on_event(event, ctx):
    _out.write(f"{{(time.time() - event.content['sentAt']) * 1000:.3f}}\\n")
    return "measured"
"""


@contextmanager
def lag_worker(emu, tmp: Path, wait_seconds: int = 20, store: str = ""):
    """A worker whose one plugin records each event's lag; yields a function that waits
    for `n` recorded lags and returns them, sorted, in ms."""
    out = tmp / "lag.txt"
    plugin = tmp / "lagmeter.py"
    plugin.write_text(LAG_PLUGIN.format(out=str(out)))
    config = worker_config(emu, tmp, plugins_toml(load=[str(plugin)]), wait_seconds=wait_seconds, store=store)

    def lags(n: int, timeout: float = 120) -> list[float]:
        wait_until(lambda: out.exists() and sum(1 for _ in out.open()) >= n, timeout=timeout)
        return sorted(float(v) for v in out.read_text().split())

    with worker(config, tmp / "worker.log"):
        yield lags


def steady(rate: int, seconds: float, store: str = "") -> tuple[float, float, float]:
    """Lag p50 and p99 (ms) and MNS requests per 1,000 events at a steady send rate
    (`store`: a Redis URL for the state store, "" = SQLite)."""
    from mns.queue import Message

    with emulator(base_state()) as emu, tempfile.TemporaryDirectory() as tmp:
        q = emu.queue()
        with lag_worker(emu, Path(tmp), store=store) as lags:
            time.sleep(0.5)  # into its long poll
            before = emu.state()["calls"]
            total = int(rate * seconds)
            start = time.monotonic()
            for i in range(total):
                pause = start + i / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                q.send_message(Message(event_body(i, sent_at=time.time())))
            values = lags(total)
            wait_until(lambda: emu.depth() == 0, timeout=30)
            requests = mns_billed(emu.state()["calls"], before)
        return percentile(values, 50), percentile(values, 99), 1000 * requests / total


def backlog(n: int) -> tuple[float, float, float]:
    """The same figures for a queue filled with `n` events before the worker starts."""
    with emulator(base_state()) as emu, tempfile.TemporaryDirectory() as tmp:
        emu.fill([event_body(i, sent_at=time.time()) for i in range(n)])
        before = emu.state()["calls"]
        with lag_worker(emu, Path(tmp)) as lags:
            values = lags(n)
            wait_until(lambda: emu.depth() == 0, timeout=30)
            requests = mns_billed(emu.state()["calls"], before)
        return percentile(values, 50), percentile(values, 99), 1000 * requests / n


def lone_event(quiet: float, repeats: int) -> float:
    """The median lag (ms) of one event sent after `quiet` seconds of an empty queue."""
    from mns.queue import Message

    with emulator(base_state()) as emu, tempfile.TemporaryDirectory() as tmp:
        q = emu.queue()
        with lag_worker(emu, Path(tmp)) as lags:
            for i in range(repeats):
                time.sleep(quiet)
                q.send_message(Message(event_body(i, sent_at=time.time())))
                lags(i + 1, timeout=30)
            values = lags(repeats)
        return percentile(values, 50)


def idle(seconds: float, wait_seconds: int = 20, long_poll_limit: int | None = None,
         settle: float = 2.0) -> tuple[float, float, float]:
    """RSS, CPU % and receive calls per hour of a worker on an empty queue. With
    `long_poll_limit` the emulator answers long polls past it at once (MNS's long-poll
    connection limit); `settle` seconds after start-up are not measured."""
    faults = {"mns": {"long_poll_limit": long_poll_limit}} if long_poll_limit is not None else None
    with emulator(base_state(faults)) as emu, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = worker_config(emu, tmp, LOG_ONLY, wait_seconds=wait_seconds)
        with worker(config, tmp / "worker.log") as proc:
            time.sleep(settle)
            calls0 = emu.state()["calls"].get("mns:BatchReceiveMessage", 0)
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
            calls1 = emu.state()["calls"].get("mns:BatchReceiveMessage", 0)
            rss = rss_mb(proc.pid)
        return rss, 100 * (cpu1 - cpu0) / (t1 - t0), 3600 * (calls1 - calls0) / (t1 - t0)
