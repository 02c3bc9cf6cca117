"""Emulator throughput through the real `mns` SDK: batch-receive(16) + batch-delete round trips/s.

Starts the emulator as a subprocess (so client and server do not share a GIL), fills a queue with
N messages (batch send), drains it with one SDK client doing batch_receive_message(16, wait 0)
then batch_delete_message, and prints the figure. Bounded: stops when the queue is drained or
after --max-seconds.

    .venv/bin/python bench/emulator_bench.py [--messages 5000] [--clients 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mns.account import Account
from mns.mns_exception import MNSServerException
from mns.queue import Message

QUEUE = "ecs-events"


def start_emulator(ready: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "ecs_worker.emulator", "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("emulator did not start")
        time.sleep(0.05)
    return proc


def queue_for(info: dict):
    q = Account(info["mns_endpoint"], info["access_key_id"], info["access_key_secret"]).get_queue(QUEUE)
    q.set_encoding(False)
    return q


def drain(info: dict, max_seconds: float, totals: list, lock: threading.Lock) -> None:
    q = queue_for(info)
    trips = got = 0
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        try:
            msgs = q.batch_receive_message(16, 0)
        except MNSServerException as e:
            if e.type == "MessageNotExist":
                break
            raise
        q.batch_delete_message([m.receipt_handle for m in msgs])
        trips += 1
        got += len(msgs)
    with lock:
        totals.append((trips, got))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=1, help="concurrent SDK clients (one connection each)")
    ap.add_argument("--max-seconds", type=float, default=60.0)
    args = ap.parse_args()
    for name in ("HTTP_PROXY", "http_proxy"):
        os.environ.pop(name, None)

    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.json"
        proc = start_emulator(ready)
        try:
            info = json.loads(ready.read_text())
            q = queue_for(info)
            body = json.dumps({"product": "ECS", "name": "Instance:StateChange", "content": {
                "resourceId": "i-bp1web000000000002", "state": "Stopped"}})
            for start in range(0, args.messages, 16):
                q.batch_send_message([Message(body) for _ in range(min(16, args.messages - start))])

            totals: list = []
            lock = threading.Lock()
            threads = [threading.Thread(target=drain, args=(info, args.max_seconds, totals, lock))
                       for _ in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    trips = sum(t for t, _ in totals)
    got = sum(g for _, g in totals)
    print(f"clients={args.clients} messages={got} round_trips={trips} seconds={elapsed:.2f}")
    print(f"batch-receive(16)+batch-delete round trips/s: {trips / elapsed:.0f} "
          f"({got / elapsed:.0f} messages/s)")
    return 0 if got == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
