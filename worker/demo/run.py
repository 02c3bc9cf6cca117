"""`ecs-worker demo`: the whole product in seconds, with no cloud account.

Starts the emulator with a seeded fleet and no queues, runs `setup` against it (queues and the
CloudMonitor rule), makes things happen in the fleet — an opted-in instance and an operator's
instance stop, spot instances are interrupted, an Auto Scaling group scales in — and starts the real worker (`ecs-worker run`, a
subprocess, real SDKs). The emulator delivers those events through the rule, as CloudMonitor does;
a few messages from elsewhere (EventBridge's envelope, a redelivery, a malformed body) are sent
directly. The worker restarts the opted-in instance and then sees the Starting/Running events its
own restart caused, and leaves them alone. With `--ram-policy`, the worker's calls (and only
those: setup and the operator act before) must be allowed by that policy. The summary comes from three independent witnesses: the
worker's JSON log, the emulator's state, and the dead-letter file.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .progress import Progress
from .scaling import SCALING_CONFIG, scale_in, scaling_lines, with_scaling_group
from .story import (
    ALB_GROUP, AUTO, GROUPS, MAINTENANCE_CONFIG, MANUAL, QUEUE, SPOTS, burst, config_text, fleet,
    maintenance_burst, with_maintenance_and_alb,
)
from .summary import maintenance_and_alb_lines, render, summarise
from ..config.store_url import shown

DRAIN_TIMEOUT = 50.0
QUIET_SECONDS = 1.0  # the queue must stay empty this long, with no instance mid-transition
READY_TIMEOUT = 30.0  # seconds the spot notices wait for the workers' first receive
NOTICE_SECONDS, RELEASE_SECONDS = 5.0, 0.5  # the demo's stand-in for the five minutes' notice


def main(args, connect) -> int:
    """`connect(config_path, out)`: `ecs-worker setup` in-process, as the composition root
    (app.connect) loads it; the exit code, its lines written to `out`."""
    from ..testing import run_emulator

    # Only the built-ins: a third-party plugin installed next to ours must not change the story.
    os.environ["ECS_WORKER_LOAD_PLUGINS"] = ""
    say = _printer(sys.stderr)
    policy = json.loads(Path(args.ram_policy).read_text(encoding="utf-8")) \
        if getattr(args, "ram_policy", None) else None
    state = with_scaling_group(with_maintenance_and_alb(fleet()), GROUPS, ALB_GROUP)
    with tempfile.TemporaryDirectory(prefix="ecs-worker-demo-") as tmp, run_emulator(state) as emulator:
        tmp_path = Path(tmp)
        before = emulator.state()
        workers_n, store = getattr(args, "workers", 1) or 1, getattr(args, "store", "") or ""
        # Workers of one host share a state_dir (SQLite); with a shared store each has its own.
        state_dirs = [tmp_path / (f"state-{n}" if store else "state") for n in range(workers_n)]
        fleet_name = f"demo-{os.getpid()}-{int(time.time())}"  # a fresh namespace on a shared server
        configs = []
        for n, state_dir in enumerate(state_dirs):
            configs.append(tmp_path / f"config-{n}.toml")
            configs[-1].write_text(config_text(emulator, state_dir, store, fleet_name) + MAINTENANCE_CONFIG
                                   + SCALING_CONFIG)
        cfg = configs[0]
        say(f"emulator listening on {emulator.endpoint}: {len(before['instances'])} instances, "
            f"{len(GROUPS)} vserver groups, ALB and NLB server groups, an Auto Scaling group, no queues")
        for line in run_setup(connect, cfg):  # as the administrator, once
            say(f"setup: {line[2:]}")
        for what in happenings(emulator) + [scale_in(emulator)]:  # as an operator, and as the cloud itself
            say(f"fleet: {what}")
        messages = burst() + maintenance_burst()
        for what, body in messages:
            # The duplicate arrives a little later, as a redelivery would, after the first is settled
            # (the worker is not even started yet: on a loaded machine its start takes seconds).
            emulator.send(QUEUE, body, delay_seconds=5 if what == "duplicate delivery" else None)
        say(f"sent {len(messages)} messages from elsewhere: " + ", ".join(what for what, _ in messages))
        emulator.reset_calls()  # from here on, every call counted is the worker's
        if policy is not None:  # the emulator refuses what the worker's policy does not allow
            emulator.set_ram_policy(policy)
            say(f"the emulator now enforces {args.ram_policy} on every call (the worker's)")
        logs = [tmp_path / f"worker-{n}.log" for n in range(workers_n)]
        workers = []
        for path, config in zip(logs, configs):
            with path.open("w") as log:
                workers.append(subprocess.Popen([sys.executable, "-m", "ecs_worker", "run", "-c", str(config)],
                                                stdout=log, stderr=subprocess.STDOUT))
        say(f"{_workers(workers_n)} started (pid {', '.join(str(w.pid) for w in workers)})"
            + (f", sharing the store {shown(store)}" if store else ""))
        released_at = spot_notices(emulator, workers_n)
        say(f"fleet: spot interruption of {SPOTS[0]} and {SPOTS[1]}")
        progress = Progress(sys.stderr)
        try:
            drained = _wait_for_drain(emulator, workers, say, progress, released_at)
        finally:
            progress.done()
        code = max(_stop(w) for w in workers)
        log_path, dead_letters = tmp_path / "worker.log", tmp_path / "dead-letter.jsonl"
        log_path.write_text("".join(p.read_text() for p in logs))
        dead_letters.write_text("".join(d.joinpath("dead-letter.jsonl").read_text()
                                        for d in dict.fromkeys(state_dirs) if (d / "dead-letter.jsonl").exists()))
        summary = summarise(before, emulator.state(), log_path, dead_letters)
        summary.update(drained=drained, worker_exit_code=code)
        after = emulator.state()
        summary["maintenance_and_alb"] = maintenance_and_alb_lines(before, after, summary["actions"])
        summary["scaling"] = scaling_lines(before, after)
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            print(render(summary))
        if not drained or code != 0:
            sys.stderr.write(log_path.read_text()[-4000:])
            return 1
    return 0


def happenings(emulator) -> list[str]:
    """Make things happen in the fleet; the emulator's rule delivers their events."""
    from aliyunsdkecs.request.v20140526.StopInstanceRequest import StopInstanceRequest

    from ..testing import acs_client

    client = acs_client(emulator, auto_retry=False)
    for iid in (AUTO, MANUAL):
        request = StopInstanceRequest()
        request.set_InstanceId(iid)
        request.set_endpoint(emulator.endpoint)
        request.set_protocol_type("http")
        client.do_action_with_exception(request)
    return [f"{AUTO} stopped (opted in to restarts)", f"{MANUAL} stopped (an operator's stop)"]


def spot_notices(emulator, workers_n: int) -> float:
    """The cloud's notices of two spot reclaims, once the workers are receiving: the demo's
    5 s stand in for the real five minutes, which a worker slow to start on a loaded machine
    must not spend before it has even begun (the reclaimed instance would then be gone).
    Returns when (monotonic) the reclaimed instances are released."""
    deadline = time.monotonic() + READY_TIMEOUT
    while emulator.state()["calls"].get("mns:BatchReceiveMessage", 0) < workers_n and time.monotonic() < deadline:
        time.sleep(0.05)
    for iid in SPOTS[:2]:
        emulator.inject_event({"type": "spot-interruption", "instance_id": iid,
                               "notice_seconds": NOTICE_SECONDS, "release_seconds": RELEASE_SECONDS})
    return time.monotonic() + NOTICE_SECONDS + RELEASE_SECONDS


def run_setup(connect, cfg: Path) -> list[str]:
    """`ecs-worker setup` in-process; the lines it printed about queues and the rule."""
    out = io.StringIO()
    if connect(cfg, out) != 0:
        raise RuntimeError("setup failed:\n" + out.getvalue())
    return [line for line in out.getvalue().splitlines() if line.startswith(("+ ", "✓ "))]


def _workers(n: int) -> str:
    return "worker" if n == 1 else f"{n} workers"


def _stop(worker) -> int:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        return worker.wait()


def _wait_for_drain(emulator, workers, say, progress: Progress, released_at: float) -> bool:
    """The queue empty, and staying empty for QUIET_SECONDS with no instance mid-transition (a
    restart's Running event is still to come while the instance is Starting), and not before
    the reclaimed spot instances are released (their events are part of the story)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    quiet_since = None
    while time.monotonic() < deadline:
        for worker in workers:
            if worker.poll() is not None:
                say(f"worker {worker.pid} exited early with code {worker.returncode}")
                return False
        state = emulator.state()
        depth = state["queues"][QUEUE]
        left = sum(depth.get(k, 0) for k in ("visible", "in_flight", "delayed"))
        moving = any(i["status"] in ("Starting", "Stopping") for i in state["instances"])
        progress.update(f"  queue {QUEUE}: {depth.get('visible', 0)} waiting, "
                        f"{depth.get('in_flight', 0)} in flight")
        if left == 0 and not moving and time.monotonic() >= released_at:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= QUIET_SECONDS:
                return True
        else:
            quiet_since = None
        time.sleep(0.1)
    return False


def _printer(stream):
    start = time.monotonic()

    def say(text: str) -> None:
        stream.write(f"[{time.monotonic() - start:5.1f}s] {text}\n")
        stream.flush()
    return say
