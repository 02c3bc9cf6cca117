"""How fast a wave of spot interruptions leaves the load balancers, and in how many calls.

    python bench/slb_wave.py [--events 500] [--groups 25] [--spread 2.0] [--throttle 20]
                             [--mix clb,alb,nlb] [--job-seconds 0.5]

In-process: the `slb` plugin behind the real dispatcher, the real SDKs, the emulator
throttling SLB (and ALB / NLB) at `--throttle` calls/s. Events arrive evenly over
`--spread` seconds. `--mix` deals the groups round-robin to CLB vserver groups and ALB /
NLB server groups (whose changes are jobs of `--job-seconds`). Reports remove calls
against the minimum (ceil(per-group / 20) per CLB group, ceil(per-group / 200) per
ALB/NLB group), all calls, retries, and per-event seconds from arrival to removed
(p50 / p95 / max).
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
    ap.add_argument("--mix", default="clb", help="kinds the groups are dealt to, e.g. clb,alb,nlb")
    ap.add_argument("--job-seconds", type=float, default=0.5, help="how long an ALB/NLB change job runs")
    args = ap.parse_args()
    per_group = args.events // args.groups
    kinds = [k.strip() for k in args.mix.split(",") if k.strip()]
    state = mixed_fleet(args.groups, per_group, kinds)
    state["job_delay_seconds"] = args.job_seconds
    state["faults"] = {api: {"throttle_rps": args.throttle} for api in ("slb", "alb", "nlb")}
    ids = [f"i-wave{g:02d}{n:02d}" for g in range(args.groups) for n in range(per_group)]
    kind_of = {g: kinds[g % len(kinds)] for g in range(args.groups)}
    configured = {}
    if args.configured:
        configured = {"vserver_groups": [f"rsp-{g:02d}" for g in kind_of if kind_of[g] == "clb"],
                      "alb_server_groups": [f"sgp-{g:02d}" for g in kind_of if kind_of[g] == "alb"],
                      "nlb_server_groups": [f"sgp-{g:02d}" for g in kind_of if kind_of[g] == "nlb"]}
    with run_emulator(state) as emu, Worker(emu, kinds=sorted(set(kinds)), **configured) as w:
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
    removes = sum(calls.get(k, 0) for k in ("slb:RemoveVServerGroupBackendServers",
                                              "alb:RemoveServersFromServerGroup", "nlb:RemoveServersFromServerGroup"))
    latencies.sort()
    report = {
        "events": len(ids), "groups": args.groups, "mix": kinds, "spread_s": args.spread,
        "throttle_rps": args.throttle, "handled": outcomes.count("handled"), "remove_calls": removes,
        "remove_calls_minimum": sum(math.ceil(per_group / (20 if kind_of[g] == "clb" else 200))
                                    for g in range(args.groups)),
        "slb_calls": sum(v for k, v in calls.items() if k.startswith("slb:")),
        "alb_calls": sum(v for k, v in calls.items() if k.startswith("alb:")),
        "nlb_calls": sum(v for k, v in calls.items() if k.startswith("nlb:")),
        "retries": sum(w.runtime.cloud.retries.values()),
        "latency_p50_s": round(statistics.median(latencies), 2),
        "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
        "latency_max_s": round(latencies[-1], 2), "wall_s": round(wall, 2),
        "naive_remove_calls": len(ids), "naive_seconds_at_throttle": round(len(ids) / args.throttle, 1),
    }
    print(json.dumps(report))
    return 0


def mixed_fleet(groups: int, per_group: int, kinds: list[str]) -> dict:
    """The tests' CLB wave fleet, with every group whose turn is ALB or NLB moved there."""
    state = wave_fleet(groups=groups, per_group=per_group, lbs=5)
    state["alb_server_groups"], state["nlb_server_groups"] = [], []
    for lb in state["load_balancers"]:
        keep = []
        for g in lb["vserver_groups"]:
            kind = kinds[int(g["id"][4:]) % len(kinds)]
            if kind == "clb":
                keep.append(g)
            else:
                state[f"{kind}_server_groups"].append(
                    {"id": "sgp-" + g["id"][4:], "load_balancer_id": f"{kind}-{lb['id']}",
                     "servers": g["backend_servers"]})
        lb["vserver_groups"] = keep
    return state


if __name__ == "__main__":
    sys.exit(main())
