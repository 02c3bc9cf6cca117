"""How fast a wave of spot interruptions leaves the load balancers, and in how many calls.

    python bench/slb_wave.py [--events 500] [--groups 25] [--spread 2.0] [--throttle 20]

In-process: the `slb` plugin behind the real dispatcher, the real SDKs, the emulator
throttling SLB at `--throttle` calls/s. Events arrive evenly over `--spread` seconds.
Reports remove calls against the minimum (ceil(per-group / 20) per group), all SLB calls,
retries, and per-event seconds from arrival to removed (p50 / p95 / max).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_slb import Worker, interruption, wave_fleet  # noqa: E402  (the tests' fleet builder)

from ecs_worker.testing import run_emulator  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--groups", type=int, default=25)
    ap.add_argument("--spread", type=float, default=2.0)
    ap.add_argument("--throttle", type=float, default=20.0)
    ap.add_argument("--configured", action="store_true", help="list the groups instead of discovering")
    args = ap.parse_args()
    per_group = args.events // args.groups
    state = wave_fleet(groups=args.groups, per_group=per_group, lbs=5)
    state["faults"] = {"slb": {"throttle_rps": args.throttle}}
    ids = [f"i-wave{g:02d}{n:02d}" for g in range(args.groups) for n in range(per_group)]
    groups = [f"rsp-{g:02d}" for g in range(args.groups)] if args.configured else []
    with run_emulator(state) as emu, Worker(emu, vserver_groups=groups) as w:
        start = time.monotonic()
        latencies, futures = [], []
        for n, iid in enumerate(ids):
            due = start + args.spread * n / len(ids)
            time.sleep(max(0.0, due - time.monotonic()))
            arrived = time.monotonic()
            fut = w.dispatcher.start(interruption(iid))
            fut.add_done_callback(lambda f, t=arrived: latencies.append(time.monotonic() - t))
            futures.append(fut)
        outcomes = [f.result(120).outcome for f in futures]
        wall = time.monotonic() - start
        calls = emu.state()["calls"]
    removes = calls.get("slb:RemoveVServerGroupBackendServers", 0)
    latencies.sort()
    report = {
        "events": len(ids), "groups": args.groups, "spread_s": args.spread, "throttle_rps": args.throttle,
        "handled": outcomes.count("handled"), "remove_calls": removes,
        "remove_calls_minimum": args.groups * math.ceil(per_group / 20),
        "slb_calls": sum(v for k, v in calls.items() if k.startswith("slb:")),
        "retries": sum(w.runtime.cloud.retries.values()),
        "latency_p50_s": round(statistics.median(latencies), 2),
        "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
        "latency_max_s": round(latencies[-1], 2), "wall_s": round(wall, 2),
        "naive_remove_calls": len(ids), "naive_seconds_at_throttle": round(len(ids) / args.throttle, 1),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
