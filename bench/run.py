"""ecs-worker benchmarks, side by side with the naive loop, in one invocation.

    python bench/run.py [--json] [--quick]

Everything runs on loopback against the emulator (its own process), through the real
SDKs; the worker runs as `ecs-worker run` in its own process, as in production. Each
measurement is repeated and the median reported, so ratios hold on a noisy machine.
With --json the last line of stdout is one JSON object (see docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
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


# -- measurements ---------------------------------------------------------------------

def plugins_toml(disabled=("restart", "slb", "maintenance", "webhook", "hello"), load=()) -> str:
    return (f"[plugins]\ndisabled = {json.dumps(list(disabled))}\nload = {json.dumps(list(load))}\n"
            '[plugins.log]\nformat = "json"\n')


LOG_ONLY = plugins_toml()


def throughput_worker(n: int, store: str = "") -> float:
    with emulator(base_state()) as emu, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        emu.fill([event_body(i) for i in range(n)])
        config = worker_config(emu, tmp, LOG_ONLY, log_level="INFO", store=store)
        # The log plugin's lines go to the worker's stderr, captured to a file.
        with worker(config, tmp / "worker.log"):
            start = time.monotonic()
            end = wait_until(lambda: emu.depth() == 0, timeout=300, every=0.02)
        lines = sum(1 for line in (tmp / "worker.log").open() if '"ecs_worker.events"' in line)
        if lines < n:
            raise RuntimeError(f"worker logged {lines} of {n} events")
        return n / (end - start)


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


def throughput_ceiling(n: int) -> float:
    """Bare SDK: batch receive 16 + batch delete, no parsing or dispatch."""
    with emulator(base_state()) as emu:
        emu.fill([event_body(i) for i in range(n)])
        q = emu.queue()
        done = 0
        start = time.monotonic()
        while done < n:
            msgs = q.batch_receive_message(16, 1)
            q.batch_delete_message([m.receipt_handle for m in msgs])
            done += len(msgs)
        return n / (time.monotonic() - start)


def wave_state(instances: int, groups: int, lbs: int, rps: float, busy: float = 0.0) -> tuple[dict, list[str]]:
    spot = [f"i-spot{n:013d}" for n in range(instances)]
    steady = [f"i-web{n:014d}" for n in range(groups)]
    per_lb = groups // lbs
    load_balancers = []
    for lb in range(lbs):
        vgroups = []
        for g in range(lb * per_lb, (lb + 1) * per_lb):
            members = spot[g::groups] + [steady[g]]
            vgroups.append({"id": f"rsp-bench{g:04d}",
                            "backend_servers": [{"server_id": s, "port": 80} for s in members]})
        load_balancers.append({"id": f"lb-bench{lb:04d}", "vserver_groups": vgroups})
    inst = [{"id": s, "status": "Running", "spot": True} for s in spot]
    inst += [{"id": s, "status": "Running"} for s in steady]
    slb = {"throttle_rps": rps}
    if busy:  # CLB's "busy with another change" answer (449) to a share of calls
        slb.update(error_rate=busy, error_code="SystemBusy")
    state = base_state(instances=inst, load_balancers=load_balancers, faults={"slb": slb})
    return state, spot


def spot_left(emu: Emulator) -> int:
    return sum(1 for lb in emu.state()["load_balancers"] for g in lb["vserver_groups"]
               for s in g["backend_servers"] if s["server_id"].startswith("i-spot"))


def wave_worker(instances: int, groups: int, lbs: int, rps: float, busy: float = 0.0) -> tuple[float, int]:
    state, spot = wave_state(instances, groups, lbs, rps, busy)
    with emulator(state) as emu, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = worker_config(emu, tmp, plugins_toml(disabled=("restart", "webhook", "hello")),
                               slb_rps=rps)
        with worker(config, tmp / "worker.log"):
            before = emu.state()["calls"]
            start = time.monotonic()
            emu.fill([event_body(i, "Instance:PreemptibleInstanceInterruption", s,
                                 {"instanceId": s, "action": "delete"}) for i, s in enumerate(spot)])
            end = wait_until(lambda: spot_left(emu) == 0, timeout=600, every=0.1)
            calls = emu.state()["calls"]
        slb_calls = sum(v - before.get(k, 0) for k, v in calls.items() if k.startswith("slb:"))
        return end - start, slb_calls


def wave_naive(instances: int, groups: int, lbs: int, rps: float) -> float:
    """One RemoveVServerGroupBackendServers per instance, serially, retrying on throttling,
    with the group known up front (the naive approach's best case: no discovery)."""
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkslb.request.v20140515.RemoveVServerGroupBackendServersRequest import (
        RemoveVServerGroupBackendServersRequest)

    state, spot = wave_state(instances, groups, lbs, rps)
    with emulator(state) as emu:
        client = AcsClient(CRED["access_key_id"], CRED["access_key_secret"], "cn-hangzhou")
        start = time.monotonic()
        for i, s in enumerate(spot):
            req = RemoveVServerGroupBackendServersRequest()
            req.set_endpoint(emu.endpoint)
            req.set_protocol_type("http")
            req.set_VServerGroupId(f"rsp-bench{i % groups:04d}")
            req.set_BackendServers(json.dumps([{"ServerId": s, "Port": "80", "Type": "ecs"}]))
            while True:
                try:
                    client.do_action_with_exception(req)
                    break
                except ServerException as exc:
                    if not exc.get_error_code().startswith("Throttling"):
                        raise
                    time.sleep(1 / rps)
        return time.monotonic() - start


def lag(rate: int, seconds: float, store: str = "") -> tuple[float, float, float]:
    """Enqueue-to-handled latency under a steady send rate (one message per send, as
    CloudMonitor does), measured by a plugin that compares the handled time to `sentAt`;
    and the worker's MNS requests (receive, delete, visibility; not the producer's sends)
    per 1,000 events, which is what MNS bills."""
    with emulator(base_state()) as emu, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out = tmp / "lag.txt"
        plugin = tmp / "lagmeter.py"
        plugin.write_text(f"""import time
from ecs_worker import hookimpl
_out = open({str(out)!r}, "a", buffering=1)

@hookimpl
def on_event(event, ctx):
    _out.write(f"{{(time.time() - event.content['sentAt']) * 1000:.3f}}\\n")
    return "measured"
""")
        config = worker_config(emu, tmp, plugins_toml(load=[str(plugin)]), wait_seconds=20, store=store)
        from mns.queue import Message

        q = emu.queue()
        with worker(config, tmp / "worker.log"):
            before = emu.state()["calls"]
            total = int(rate * seconds)
            start = time.monotonic()
            for i in range(total):
                target = start + i / rate
                pause = target - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                q.send_message(Message(event_body(i, sent_at=time.time())))
            wait_until(lambda: out.exists() and sum(1 for _ in out.open()) >= total, timeout=60)
            after = emu.state()["calls"]
        values = sorted(float(v) for v in out.read_text().split())
        requests = sum(v - before.get(k, 0) for k, v in after.items()
                       if k.startswith("mns:") and k != "mns:SendMessage")
        return percentile(values, 50), percentile(values, 99), 1000 * requests / total


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


def help_seconds() -> float:
    exe = Path(PY).with_name("ecs-worker")
    cmd = [str(exe), "--help"] if exe.exists() else [PY, "-m", "ecs_worker", "--help"]
    start = time.monotonic()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - start


# -- helpers --------------------------------------------------------------------------

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


def ideal_wave_calls(instances: int, groups: int, lbs: int) -> int:
    """The fewest SLB calls that can do the job: list the load balancers (one page), list
    each one's vserver groups, read each group's members, then one Remove per group per
    20 servers."""
    per_group = math.ceil(instances / groups)
    return 1 + lbs + groups + groups * math.ceil(per_group / 20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="smaller, single runs (a smoke test)")
    parser.add_argument("--rtt-ms", type=float, default=2.0,
                        help="modelled MNS/ECS/SLB round trip, added by the emulator (default 2)")
    parser.add_argument("--store-only", action="store_true",
                        help="only the state-store comparison (SQLite, Redis, Redis at --rtt-ms)")
    args = parser.parse_args()
    quick = args.quick
    repeats = 1 if quick else 3
    n = 1000 if quick else 5000
    wave = (200, 10, 2) if quick else (1000, 50, 10)
    rps = 20.0
    r: dict = {"cores": os.cpu_count(), "python": platform.python_version(), "repeats": repeats}
    if args.store_only:
        return report(compare_stores(n, repeats, quick, args.rtt_ms), args.json)

    global RTT_MS
    for rtt in dict.fromkeys((0, args.rtt_ms)):
        RTT_MS = rtt
        log(f"throughput: {n} events, modelled round trip {rtt} ms")
        t = {"throughput_events_per_s": round(median_of(throughput_worker, repeats, n), 1),
             "naive_events_per_s": round(median_of(throughput_naive, repeats, n // 5 if quick else 2000), 1),
             "ceiling_events_per_s": round(median_of(throughput_ceiling, repeats, n), 1)}
        t["throughput_ratio_vs_naive"] = round(t["throughput_events_per_s"] / t["naive_events_per_s"], 2)
        t["throughput_ratio_vs_ceiling"] = round(t["throughput_events_per_s"] / t["ceiling_events_per_s"], 2)
        if rtt == args.rtt_ms:
            r.update(rtt_ms=rtt, **t)
        else:
            r["loopback"] = t  # no modelled network: the emulator's own speed is the limit
    RTT_MS = args.rtt_ms

    log(f"wave: {wave[0]} interruptions over {wave[1]} groups in {wave[2]} load balancers, SLB at {rps:g}/s")
    seconds, calls = median_of(wave_worker, repeats, *wave, rps)
    ideal_calls = ideal_wave_calls(*wave)
    r.update(wave_seconds=round(seconds, 2), wave_slb_calls=int(calls), wave_ideal_calls=ideal_calls,
             wave_ideal_seconds=round(ideal_calls / rps, 2))
    r["wave_ratio_vs_ideal"] = round(r["wave_seconds"] / r["wave_ideal_seconds"], 2)
    busy = 0.2
    log(f"wave again with SLB answering SystemBusy (449) to {busy:.0%} of calls")
    seconds, calls = median_of(wave_worker, repeats, *wave, rps, busy)
    r.update(wave_busy_share=busy, wave_busy_seconds=round(seconds, 2), wave_busy_slb_calls=int(calls))
    r["wave_busy_ratio_vs_ideal"] = round(seconds / r["wave_ideal_seconds"], 2)
    log("wave, naive: one Remove call per instance, serially")
    r["wave_naive_seconds"] = round(wave_naive(*wave, rps), 2)

    log("lag under a steady 200 events/s")
    p50, p99, per_1000 = median_of(lag, 1, 200, 5 if quick else 15)
    r.update(lag_p50_ms=round(p50, 1), lag_p99_ms=round(p99, 1), mns_requests_per_1000_events=round(per_1000, 1))

    idle_seconds = 10 if quick else 60
    log(f"idle: {idle_seconds}s on an empty queue")
    rss, cpu, per_hour = idle(idle_seconds)
    r.update(idle_rss_mb=round(rss, 1), idle_cpu_percent=round(cpu, 2), idle_receive_calls_per_hour=round(per_hour))
    # Past MNS's long-poll limit every receive answers at once; 2 s polls give enough samples
    # in a short window. The bound is 3600 / wait_seconds; the first 10 s (the ramp) not counted.
    log(f"idle past the long-poll limit: {idle_seconds}s, wait_seconds 2")
    _, cpu, per_hour = idle(idle_seconds, wait_seconds=2, long_poll_limit=0, settle=10)
    r.update(idle_receive_calls_per_hour_past_long_poll_limit=round(per_hour),
             idle_receive_calls_bound_per_hour=3600 // 2, idle_cpu_percent_past_long_poll_limit=round(cpu, 2))

    r["help_seconds"] = round(statistics.median(help_seconds() for _ in range(5)), 3)
    r.update(compare_stores(n, repeats, quick, args.rtt_ms))
    return report(r, args.json)


def report(r: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(r))
    else:
        width = max(map(len, r))
        for key, value in r.items():
            print(f"{key:<{width}}  {value}")
    return 0


def compare_stores(n: int, repeats: int, quick: bool, rtt_ms: float) -> dict:
    """Throughput and lag with the SQLite store, with Redis on loopback and with Redis behind a
    proxy adding `rtt_ms` a round trip; MNS at the same modelled round trip throughout."""
    global RTT_MS
    RTT_MS = rtt_ms
    out: dict = {"store_rtt_ms": rtt_ms}
    with store_bench.redis_server() as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with store_bench.delaying_proxy(port, rtt_ms) as proxied:
            for name, store in (("sqlite", ""), ("redis", url), ("redis_rtt", f"redis://127.0.0.1:{proxied}/0")):
                log(f"store {name}: {n} events, then lag at 200 events/s")
                out[f"store_{name}_events_per_s"] = round(median_of(throughput_worker, repeats, n, store), 1)
                p50, p99, _ = median_of(lag, 1, 200, 5 if quick else 15, store)
                out[f"store_{name}_lag_p50_ms"], out[f"store_{name}_lag_p99_ms"] = round(p50, 1), round(p99, 1)
    base = out["store_sqlite_events_per_s"]
    out["store_redis_ratio_vs_sqlite"] = round(out["store_redis_events_per_s"] / base, 2)
    out["store_redis_rtt_ratio_vs_sqlite"] = round(out["store_redis_rtt_events_per_s"] / base, 2)
    out["store_redis_rtt_goal"] = ">= 0.85 (the shared store costs at most 15 % at the modelled round trip)"
    return out


if __name__ == "__main__":
    sys.exit(main())
