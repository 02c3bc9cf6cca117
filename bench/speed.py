"""Throughput: the worker, the seed-style naive loop and the bare SDK batch loop (the
ceiling) drain the same filled queue; CPU per event makes the figures comparable across
machines."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from kit import LOG_ONLY, base_state, cpu_seconds, emulator, event_body, wait_until, worker, worker_config


def throughput_worker(n: int, store: str = "") -> tuple[float, float]:
    """Events/s and the worker process's CPU ms per event, from READY=1 to an empty queue
    (`store`: a Redis URL for the state store, "" = SQLite)."""
    with emulator(base_state()) as emu, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        emu.fill([event_body(i) for i in range(n)])
        config = worker_config(emu, tmp, LOG_ONLY, log_level="INFO", store=store)
        # The log plugin's lines go to the worker's stderr, captured to a file.
        with worker(config, tmp / "worker.log") as proc:
            start, cpu0 = time.monotonic(), cpu_seconds(proc.pid)
            end = wait_until(lambda: emu.depth() == 0, timeout=300, every=0.02)
            cpu = cpu_seconds(proc.pid) - cpu0
        lines = sum(1 for line in (tmp / "worker.log").open() if '"ecs_worker.events"' in line)
        if lines < n:
            raise RuntimeError(f"worker logged {lines} of {n} events")
        return n / (end - start), 1000 * cpu / n


def throughput_naive(n: int) -> float:
    """The seed-style loop: one receive_message, one delete_message per event, serial."""
    from ecs_worker.events.event import parse_event

    with emulator(base_state()) as emu:
        emu.fill([event_body(i) for i in range(n)])
        q = emu.queue()
        start = time.monotonic()
        for _ in range(n):
            msg = q.receive_message(1)
            parse_event(msg.message_body)
            q.delete_message(msg.receipt_handle)
        return n / (time.monotonic() - start)


def throughput_ceiling(n: int) -> tuple[float, float]:
    """Bare SDK: batch receive 16 + batch delete, no parsing or dispatch; events/s and this
    loop's CPU ms per event."""
    with emulator(base_state()) as emu:
        emu.fill([event_body(i) for i in range(n)])
        q = emu.queue()
        done = 0
        start, cpu0 = time.monotonic(), time.process_time()
        while done < n:
            msgs = q.batch_receive_message(16, 1)
            q.batch_delete_message([m.receipt_handle for m in msgs])
            done += len(msgs)
        return n / (time.monotonic() - start), 1000 * (time.process_time() - cpu0) / n
