"""The `[metrics] listen` endpoint: `/metrics` (Prometheus), `/healthz`, and `/probes` (the
`doctor --probe` test events this worker received, probes.py).

`/healthz` reflects the consume loop, not the process: 200 while receive calls keep
completing, 503 once none has completed for longer than twice the long-poll wait plus
5 s — a wedged loop, a dead network or lost credentials all show up there — and 503 at
once when an internal thread of the worker died (`thread_died`), 503 naming the plugin
(`stuck_plugins`) once all of a plugin's call threads have been stuck for
`[plugins] stuck_health_seconds` (`stuck.py`), 503 while RAM refuses receiving or
deleting (`call_refused`, status "denied", naming the RAM action(s) under both readings),
and 503 while a shared state store cannot be reached (`store`: why; the worker waits for
it and recovers by itself).
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import metrics, probes

dead_threads: list[str] = []  # internal threads that died: the worker is failing
stuck_plugins: dict[str, float] = {}  # plugin -> seconds all its threads have been stuck, past the bound
refused: dict[str, str] = {}  # call ("receive", "delete") -> the RAM refusal, naming the action(s)


def thread_died(name: str) -> None:
    if name not in dead_threads:
        dead_threads.append(name)


def call_refused(call: str, error: str) -> None:
    """RAM refuses `call` (the worker backs off and tries again): unhealthy until it passes."""
    refused[call] = error


def call_allowed(call: str) -> None:
    refused.pop(call, None)


class Health:
    def __init__(self, wait_seconds: float, store_problem: Callable[[], str | None] = lambda: None) -> None:
        self.limit = 2 * wait_seconds + 5
        self.started = time.monotonic()
        self.store_problem = store_problem

    def check(self) -> tuple[bool, dict]:
        last = metrics.last_poll_completed
        since = time.monotonic() - (last or self.started)  # before the first poll: since start-up
        stuck, denials = dict(stuck_plugins), dict(refused)
        store = self.store_problem()
        ok = since <= self.limit and not dead_threads and not stuck and not denials and store is None
        status = ("failed" if dead_threads else "stuck" if stuck else "denied" if denials
                  else "stalled" if since > self.limit else "store_unreachable" if store else "ok")
        detail = {"status": status, "seconds_since_poll": round(since, 1),
                  "limit_seconds": self.limit, "polled": bool(last)}
        if store:
            detail["store"] = store
        if dead_threads:
            detail["dead_threads"] = list(dead_threads)
        if stuck:
            detail["stuck_plugins"] = {name: round(seconds, 1) for name, seconds in stuck.items()}
        if denials:
            detail["denied"] = denials
        return ok, detail


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen must be host:port, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(listen: str, wait_seconds: float,
          store_problem: Callable[[], str | None] = lambda: None) -> ThreadingHTTPServer:
    """Start the listener on a daemon thread; returns the server (`.server_address`, `.shutdown()`)."""
    health = Health(wait_seconds, store_problem)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/probes":  # doctor --probe: the test events this worker received
                self._send(200, json.dumps({"probes": probes.RECEIVED.seen()}).encode() + b"\n",
                           "application/json")
            elif path == "/healthz":
                ok, detail = health.check()
                self._send(200 if ok else 503, json.dumps(detail).encode() + b"\n", "application/json")
            else:
                self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes every 15 s would flood the journal
            pass

    server = ThreadingHTTPServer(parse_listen(listen), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
