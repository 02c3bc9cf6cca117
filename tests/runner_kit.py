"""Helpers for the `ecs-worker run` tests: events, a recording test plugin, configs, and
workers as real subprocesses. Every wait here is bounded in time."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

WORKER = [sys.executable, "-m", "ecs_worker"]
QUEUE, DLQ = "ecs-events", "ecs-events-dlq"

# Behaviour is chosen per event through its `content`: sleep, fail, defer.
PLUGIN = '''
import os, time
from ecs_worker import hookimpl

RECORD = {record!r}

def _write(line):
    fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)

@hookimpl
def on_event(event, ctx):
    c = event.content
    _write(f"start {{event.id}} {{os.getpid()}}")
    if c.get("sleep"):
        time.sleep(c["sleep"])
    if c.get("fail"):
        raise RuntimeError("this plugin always fails")
    if c.get("defer") and ctx.deferred_since is None:
        ctx.defer(c["defer"], "test deferral")
        _write(f"deferred {{event.id}} {{os.getpid()}}")
        return "deferred"
    _write(f"done {{event.id}} {{os.getpid()}}")
    return "recorded"
'''


def event_body(event_id: str | None = None, **content) -> str:
    """A CloudMonitor event whose `content` steers the test plugin."""
    return json.dumps({
        "ver": "1.0", "id": event_id or str(uuid.uuid4()), "product": "ECS",
        "resourceId": "acs:ecs:cn-hangzhou:1690000000000000:instance/i-bp1test",
        "level": "INFO", "name": "Test:Event", "userId": "1690000000000000",
        "eventTime": "20261127T121826.922+0800", "regionId": "cn-hangzhou",
        "content": {"instanceId": "i-bp1test", **content}})


def emulator_state(visibility_timeout: int = 3) -> dict:
    """The example world with short visibility timeouts, so redeliveries come fast."""
    from ecs_worker.emulator import default_state

    state = default_state()
    for q in state["queues"]:
        q["visibility_timeout"] = visibility_timeout
    return state


class Setup:
    """A test plugin, a config and a state dir under `root`, pointed at `emulator`."""

    def __init__(self, root: Path, emulator, **overrides) -> None:
        self.root = root
        self.record = root / "record.log"
        self.plugin = root / "recorder.py"
        self.plugin.write_text(PLUGIN.format(record=str(self.record)))
        self.emulator = emulator
        self.overrides = overrides

    def config(self, name: str = "worker", **overrides) -> Path:
        state_dir = self.root / f"state-{name}"
        sections = {
            "mns": {"endpoint": self.emulator.mns_endpoint, "queue": QUEUE, "wait_seconds": 1,
                    "batch_size": 16, "visibility_timeout": 10},
            "cloud": {"endpoint": self.emulator.endpoint, "protocol": "http",
                      "region": self.emulator.region},
            "credentials": {"access_key_id": self.emulator.access_key_id,
                            "access_key_secret": self.emulator.access_key_secret},
            "worker": {"concurrency": 4, "max_attempts": 3, "state_dir": str(state_dir),
                       "shutdown_timeout": 10, "retry_base_seconds": 1, "retry_max_seconds": 2},
            "plugins": {"load": [str(self.plugin)], "disabled": ["hello"], "call_timeout": 30},
            "logging": {"level": "INFO"},
            "metrics": {},
        }
        for key, value in {**self.overrides, **overrides}.items():
            section, _, field = key.partition("__")
            sections[section][field] = value
        path = self.root / f"{name}.toml"
        path.write_text("".join(f"[{s}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in kv.items())
                                for s, kv in sections.items()))
        return path

    def lines(self, kind: str = "done") -> list[str]:
        """Event ids the plugin recorded with `kind` (start | done | deferred), in order."""
        if not self.record.exists():
            return []
        return [parts[1] for parts in (line.split() for line in self.record.read_text().splitlines())
                if parts and parts[0] == kind]


class Worker:
    """`ecs-worker run -c CONFIG` as a subprocess; output goes to files under the config's dir."""

    def __init__(self, config: Path, env: dict | None = None) -> None:
        self.log = config.with_suffix(f".{time.monotonic_ns()}.log")
        self._out = open(self.log, "wb")
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        full_env.update(env or {})
        self.proc = subprocess.Popen([*WORKER, "run", "-c", str(config)], stdout=self._out,
                                     stderr=subprocess.STDOUT, env=full_env)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()

    def finish(self, timeout: float = 30) -> None:
        """The usual end of a test's worker: SIGTERM and up to `timeout` s to drain (longer
        fails the test, as a worker that ignores SIGTERM should); killed either way."""
        try:
            if self.alive():
                self.signal(signal.SIGTERM)
            self.wait(timeout)
        finally:
            self.stop()


def connection_toml(emulator, key_id: str, secret: str, visibility_timeout: int | None = 10,
                    queue: str = QUEUE, dead_letter_queue: str = "") -> str:
    """The [mns], [cloud] and [credentials] sections that point a worker at `emulator`: what every
    hand-written test config starts with (the rest is the test's own)."""
    hidden = f"visibility_timeout = {visibility_timeout}\n" if visibility_timeout else ""
    dlq = f'dead_letter_queue = "{dead_letter_queue}"\n' if dead_letter_queue else ""
    return (f'[mns]\nendpoint = "{emulator.mns_endpoint}"\nqueue = "{queue}"\n{dlq}wait_seconds = 1\n{hidden}'
            f'[cloud]\nendpoint = "{emulator.endpoint}"\nprotocol = "http"\nregion = "{emulator.region}"\n'
            f'[credentials]\naccess_key_id = "{key_id}"\naccess_key_secret = "{secret}"\n')


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05,
               message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def depth(emulator, queue: str = QUEUE) -> dict:
    return emulator.state()["queues"][queue]


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(port: int, path: str) -> tuple[int, dict | str]:
    """GET a worker's /healthz (parsed) or /metrics (text): (status, body)."""
    try:
        with OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    return status, json.loads(text) if path == "/healthz" else text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
