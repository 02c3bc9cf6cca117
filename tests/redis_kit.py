"""A real Redis server for the tests: Debian's `redis-server` (`make test` installs it when
it can), started on 127.0.0.1 on a free port in a temporary directory, never the system
service. Append-only persistence is on, so a restart keeps what was written, as ApsaraDB
for Redis does. Tests that need it skip, saying why, only when no server binary exists."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

BINARY = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
NO_SERVER = ("no redis-server on this machine: `apt-get install redis-server` (make test and .ci/run "
             "install it where they run as root)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.dir, self.port, self.proc = directory, free_port(), None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [BINARY, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start: {(self.dir / 'redis.log').read_text()[-500:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if BINARY is None:
        pytest.skip(NO_SERVER)
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path):
    """A server of the test's own, for tests that stop or restart it."""
    if BINARY is None:
        pytest.skip(NO_SERVER)
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def fleet_name() -> str:
    """A fresh key namespace: tests share one server without sharing keys."""
    return "t-" + uuid.uuid4().hex[:12]
