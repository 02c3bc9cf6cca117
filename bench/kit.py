"""The benchmarks' kit: the emulator and the worker as processes of their own, the
events, and small measuring helpers. Every wait is bounded in time.

`WORKER_PYTHONPATH`, when set (bench/run.py --baseline), makes the worker process import
another tree's `ecs_worker` (a baseline), so before and after run side by side against
the same emulator code and the same bench.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import store_bench

PY = sys.executable
QUEUE = "bench"
CRED = {"access_key_id": "LTAIbenchKey00001", "access_key_secret": "bench-secret"}
WORKER_PYTHONPATH = ""  # a baseline's package root for the worker process; "" = this tree


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the emulator, in its own process -------------------------------------------------

class Emulator:
    def __init__(self, info: dict, proc: subprocess.Popen):
        self.info, self.proc = info, proc
        self.endpoint = info["endpoint"]
        self.url = f"http://{self.endpoint}"

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/_emulator/state", timeout=10) as resp:
            return json.load(resp)

    def faults(self, faults: dict) -> None:
        req = urllib.request.Request(f"{self.url}/_emulator/faults", data=json.dumps(faults).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()

    def depth(self, queue: str = QUEUE) -> int:
        d = self.state()["queues"][queue]
        return d["visible"] + d["in_flight"] + d.get("delayed", 0)

    def queue(self, name: str = QUEUE):
        from mns.account import Account

        q = Account(self.url, CRED["access_key_id"], CRED["access_key_secret"]).get_queue(name)
        q.set_encoding(False)
        return q

    def fill(self, bodies: list[str], name: str = QUEUE) -> None:
        from mns.queue import Message

        q = self.queue(name)
        for i in range(0, len(bodies), 16):
            q.batch_send_message([Message(b) for b in bodies[i:i + 16]])


RTT_MS = 0  # a modelled network round trip: the emulator's latency fault on every API


def base_state(faults: dict | None = None, **extra) -> dict:
    latency = {api: {"latency_ms": RTT_MS} for api in ("mns", "ecs", "slb")} if RTT_MS else {}
    for api, fault in (faults or {}).items():
        latency[api] = {**latency.get(api, {}), **fault}
    return {"region": "cn-hangzhou", "account_id": "1690000000000000", "credentials": [CRED],
            "queues": [{"name": QUEUE, "visibility_timeout": 60}], "instances": [],
            "load_balancers": [], "faults": latency, **extra}


@contextmanager
def emulator(state: dict):
    with tempfile.TemporaryDirectory() as tmp:
        path, ready = Path(tmp) / "state.json", Path(tmp) / "ready.json"
        path.write_text(json.dumps(state))
        proc = subprocess.Popen([PY, "-m", "ecs_worker", "emulator", "--state", str(path),
                                 "--ready-file", str(ready)], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("emulator did not start")
                time.sleep(0.05)
            yield Emulator(json.loads(ready.read_text()), proc)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


# -- the worker, in its own process ---------------------------------------------------

def worker_config(emu: Emulator, tmp: Path, extra: str = "", wait_seconds: int = 1,
                  slb_rps: float = 20.0, log_level: str = "WARNING", store: str = "") -> Path:
    """A worker's config for the emulator; `store` a Redis URL (store_bench.py), "" = SQLite."""
    path = tmp / "config.toml"
    path.write_text(f"""
[mns]
endpoint = "{emu.url}"
queue = "{QUEUE}"
wait_seconds = {wait_seconds}
[cloud]
region = "cn-hangzhou"
endpoint = "{emu.endpoint}"
protocol = "http"
slb_rps = {slb_rps}
[credentials]
access_key_id = "{CRED['access_key_id']}"
access_key_secret = "{CRED['access_key_secret']}"
[worker]
state_dir = "{tmp / 'state'}"
{store_bench.worker_toml(store)}[logging]
level = "{log_level}"
format = "json"
{extra}
""")
    return path


@contextmanager
def worker(config: Path, log_file: Path):
    """Start `ecs-worker run`; yield once it reports READY=1 over a real notify socket."""
    sock_path = str(config.parent / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": sock_path}
    if WORKER_PYTHONPATH:
        env["PYTHONPATH"] = WORKER_PYTHONPATH
    with log_file.open("w") as out:
        proc = subprocess.Popen([PY, "-m", "ecs_worker", "run", "-c", str(config)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            while b"READY=1" not in sock.recv(4096):
                pass
            yield proc
        finally:
            sock.close()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def wait_until(predicate, timeout: float, every: float = 0.05) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not done within {timeout}s")
        time.sleep(every)
    return time.monotonic()


def event_body(n: int, name="Instance:StateChange", instance=None, content=None, sent_at=None) -> str:
    instance = instance or f"i-bench{n:012d}"
    content = content or {"resourceId": instance, "state": "Running"}
    if sent_at is not None:
        content = {**content, "sentAt": sent_at}
    return json.dumps({"ver": "1.0", "id": f"bench-{n}-{time.time_ns()}", "product": "ECS", "level": "INFO",
                       "name": name, "regionId": "cn-hangzhou",
                       "resourceId": f"acs:ecs:cn-hangzhou:1690000000000000:instance/{instance}",
                       "content": content})


# -- measuring helpers ----------------------------------------------------------------

def help_seconds() -> float:
    exe = Path(PY).with_name("ecs-worker")
    cmd = [str(exe), "--help"] if exe.exists() else [PY, "-m", "ecs_worker", "--help"]
    start = time.monotonic()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - start


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def median_of(fn, repeats: int, *args):
    results = []
    for i in range(repeats):
        value = fn(*args)
        log(f"  {fn.__name__} run {i + 1}/{repeats}: {value}")
        results.append(value)
    if isinstance(results[0], tuple):
        return tuple(statistics.median(r[i] for r in results) for i in range(len(results[0])))
    return statistics.median(results)




def plugins_toml(disabled=("restart", "slb", "maintenance", "webhook", "hello"), load=()) -> str:
    return (f"[plugins]\ndisabled = {json.dumps(list(disabled))}\nload = {json.dumps(list(load))}\n"
            '[plugins.log]\nformat = "json"\n')


LOG_ONLY = plugins_toml()


def mns_billed(calls: dict, before: dict | None = None) -> int:
    """The worker's MNS requests between two snapshots of the emulator's call counts:
    every receive, delete and visibility change (the producer's sends and the worker's
    start-up checks are not per event)."""
    before = before or {}
    return sum(v - before.get(k, 0) for k, v in calls.items()
               if k.startswith("mns:") and "Send" not in k and k != "mns:GetQueueAttributes")
