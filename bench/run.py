"""ecs-worker benchmarks, side by side with the naive loop and the bare SDK loop, and with
a baseline revision of the worker when asked, in one invocation.

    python bench/run.py [--json] [--quick] [--rtt-ms 2] [--baseline REV] [--store-only]
                        [--wave-only [--repeats N]]

Everything runs on loopback against the emulator (its own process), through the real
SDKs; the worker runs as `ecs-worker run` in its own process, as in production. Each
throughput and wave measurement is repeated and the median reported, so ratios hold on a
noisy machine. With --baseline the worker-side figures are measured for that git revision
too, each right after this tree's, and reported under "baseline" with the ratios. With
--json the last line of stdout is one JSON object (see docs/benchmarks.md), goals included.
The state stores side by side (SQLite, Redis, Redis at the modelled round trip) are the
last part (`stores.py`); --store-only runs just that (with --baseline: for both trees,
alternately). --wave-only runs just the two waves (plain and busy), `--repeats` times each,
every single run reported (alternating with the baseline's when one is given).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import cost  # noqa: E402 - the bench's own modules, beside this file
import goals  # noqa: E402
import kit  # noqa: E402
from kit import help_seconds, log, median_of  # noqa: E402
from stores import compare_stores  # noqa: E402
from speed import throughput_ceiling, throughput_naive, throughput_worker  # noqa: E402
from wave import busy_ideal_seconds, ideal_wave_calls, wave_naive, wave_worker  # noqa: E402

RATES = (20, 100, 200)  # steady events/s, one message per send
BUSY = 0.3  # the share of SLB calls answered SystemBusy in the busy wave


def worker_side(quick: bool, repeats: int, n: int) -> dict:
    """The figures that depend on the worker's code (measured again for a baseline)."""
    r: dict = {}
    events_per_s, cpu_ms = median_of(throughput_worker, repeats, n)
    r.update(throughput_events_per_s=round(events_per_s, 1), cpu_ms_per_event=round(cpu_ms, 3))
    seconds = 5 if quick else 15
    for rate in RATES:
        log(f"steady {rate} events/s for {seconds}s")
        p50, p99, per_1000 = cost.steady(rate, seconds)
        r.update({f"mns_requests_per_1000_events_at_{rate}_per_s": round(per_1000, 1),
                  f"lag_p50_ms_at_{rate}_per_s": round(p50, 1), f"lag_p99_ms_at_{rate}_per_s": round(p99, 1)})
    backlog = 1000 if quick else 5000
    log(f"backlog of {backlog}")
    p50, p99, per_1000 = cost.backlog(backlog)
    r.update(mns_requests_per_1000_events_backlog=round(per_1000, 1), lag_p50_ms_backlog=round(p50, 1),
             lag_p99_ms_backlog=round(p99, 1), backlog_events=backlog)
    quiet, lone = (5, 1) if quick else (30, 3)
    log(f"lone event after {quiet}s of quiet, {lone}x")
    r.update(lone_event_lag_ms=round(cost.lone_event(quiet, lone), 1), lone_event_quiet_seconds=quiet)
    return r


def baseline_tree(rev: str, into: Path) -> Path:
    """`rev`'s worker/ and plugins/ laid out as an importable `ecs_worker` package."""
    src = into / "src"
    src.mkdir()
    archive = subprocess.run(["git", "archive", rev, "worker", "plugins"], check=True, capture_output=True,
                             cwd=Path(__file__).parent.parent).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    pkg = into / "pkg"
    shutil.copytree(src / "worker", pkg / "ecs_worker")
    shutil.copytree(src / "plugins", pkg / "ecs_worker" / "plugins")
    return pkg


def wave_runs(wave: tuple[int, int, int], rps: float, repeats: int, baseline: str | None) -> dict:
    """Each wave (plain, busy) `repeats` times, a baseline's run right after each of this
    tree's: every single run's ratio, and the medians."""
    ideal_calls = ideal_wave_calls(*wave)
    ideals = {"wave": ideal_calls / rps, "wave_busy": busy_ideal_seconds(ideal_calls, BUSY, rps)}
    trees = {"": ""}
    with tempfile.TemporaryDirectory() as tmp:
        if baseline:
            trees["baseline_"] = str(baseline_tree(baseline, Path(tmp)))
        runs: dict[str, list] = {}
        for i in range(repeats):
            for name, busy in (("wave", 0.0), ("wave_busy", BUSY)):
                for prefix, path in trees.items():
                    kit.WORKER_PYTHONPATH = path
                    try:
                        seconds, calls = wave_worker(*wave, rps, busy)
                    finally:
                        kit.WORKER_PYTHONPATH = ""
                    ratio = round(seconds / ideals[name], 2)
                    log(f"  {prefix or 'this tree '}{name} run {i + 1}/{repeats}: {seconds:.2f} s, {calls} calls, {ratio}x")
                    # vs its own tries at the rate: how well the run used the rate, whatever
                    # the busy answers it drew
                    runs.setdefault(f"{prefix}{name}_runs", []).append(
                        {"seconds": round(seconds, 2), "slb_calls": calls, "ratio_vs_ideal": ratio,
                         "ratio_vs_own_calls": round(seconds / (calls / rps), 2)})
    r: dict = {"wave_ideal_calls": ideal_calls, "wave_ideal_seconds": round(ideals["wave"], 2),
               "wave_busy_share": BUSY, "wave_busy_ideal_seconds": round(ideals["wave_busy"], 2),
               **({"baseline": baseline} if baseline else {})}
    for key, values in runs.items():
        r[key] = values
        r[key.replace("_runs", "_ratio_vs_ideal")] = statistics.median(v["ratio_vs_ideal"] for v in values)
    return r


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON object on stdout")
    parser.add_argument("--quick", action="store_true", help="smaller, single runs (a smoke test)")
    parser.add_argument("--rtt-ms", type=float, default=2.0,
                        help="modelled MNS/ECS/SLB round trip, added by the emulator (default 2)")
    parser.add_argument("--baseline", metavar="REV", help="also measure the worker at this git revision")
    parser.add_argument("--store-only", action="store_true",
                        help="only the state-store comparison (SQLite, Redis, Redis at --rtt-ms)")
    parser.add_argument("--wave-only", action="store_true",
                        help="only the waves (plain and busy), each single run reported")
    parser.add_argument("--repeats", type=int, help="runs of each measurement (default 3, --quick 1)")
    args = parser.parse_args()
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    n = 1000 if quick else 5000
    wave = (200, 10, 2) if quick else (1000, 50, 10)
    rps = 20.0
    r: dict = {"cores": os.cpu_count(), "python": platform.python_version(), "repeats": repeats,
               "rtt_ms": args.rtt_ms}
    if args.store_only:
        with tempfile.TemporaryDirectory() as tmp:
            base = str(baseline_tree(args.baseline, Path(tmp))) if args.baseline else ""
            r.update(compare_stores(n, repeats, quick, args.rtt_ms, base))
        if args.baseline:
            r["baseline"]["rev"] = args.baseline
        print(json.dumps(r) if args.json else "\n".join(f"{k}  {v}" for k, v in r.items()))
        return 0
    if args.wave_only:
        kit.RTT_MS = args.rtt_ms
        r.update(wave_runs(wave, rps, repeats, args.baseline))
        print(json.dumps(r) if args.json else "\n".join(f"{k}  {v}" for k, v in r.items()))
        return 0

    kit.RTT_MS = 0
    log(f"loopback (no modelled round trip): {n} events")
    loop = {"throughput_events_per_s": round(median_of(throughput_worker, repeats, n)[0], 1),
            "ceiling_events_per_s": round(median_of(throughput_ceiling, repeats, n)[0], 1)}
    loop["throughput_ratio_vs_ceiling"] = round(loop["throughput_events_per_s"] / loop["ceiling_events_per_s"], 2)
    r["loopback"] = loop

    kit.RTT_MS = args.rtt_ms
    log(f"this tree, modelled round trip {args.rtt_ms} ms")
    r.update(worker_side(quick, repeats, n))
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            kit.WORKER_PYTHONPATH = str(baseline_tree(args.baseline, Path(tmp)))
            log(f"baseline {args.baseline}, modelled round trip {args.rtt_ms} ms")
            try:
                base = worker_side(quick, repeats, n)
            finally:
                kit.WORKER_PYTHONPATH = ""
        r["baseline"] = {"rev": args.baseline, **base}
        r["vs_baseline"] = {k: round(r[k] / v, 2) for k, v in base.items() if isinstance(v, float) and v}
        r["lone_event_lag_ms_bound"] = goals.lone_event_bound(base)
    ceiling, ceiling_cpu = median_of(throughput_ceiling, repeats, n)
    naive = median_of(throughput_naive, repeats, n // 5 if quick else 2000)
    r.update(ceiling_events_per_s=round(ceiling, 1), ceiling_cpu_ms_per_event=round(ceiling_cpu, 3),
             naive_events_per_s=round(naive, 1))
    r["throughput_ratio_vs_naive"] = round(r["throughput_events_per_s"] / naive, 2)
    r["throughput_ratio_vs_ceiling"] = round(r["throughput_events_per_s"] / ceiling, 2)

    log(f"wave: {wave[0]} interruptions over {wave[1]} groups in {wave[2]} load balancers, SLB at {rps:g}/s")
    seconds, calls = median_of(wave_worker, repeats, *wave, rps)
    ideal_calls = ideal_wave_calls(*wave)
    r.update(wave_seconds=round(seconds, 2), wave_slb_calls=int(calls), wave_ideal_calls=ideal_calls,
             wave_ideal_seconds=round(ideal_calls / rps, 2))
    r["wave_ratio_vs_ideal"] = round(r["wave_seconds"] / r["wave_ideal_seconds"], 2)
    log(f"wave again with SLB answering SystemBusy (449) to {BUSY:.0%} of calls")
    seconds, calls = median_of(wave_worker, repeats, *wave, rps, BUSY)
    busy_ideal = busy_ideal_seconds(ideal_calls, BUSY, rps)
    r.update(wave_busy_share=BUSY, wave_busy_seconds=round(seconds, 2), wave_busy_slb_calls=int(calls),
             wave_busy_ideal_seconds=round(busy_ideal, 2), wave_busy_ratio_vs_ideal=round(seconds / busy_ideal, 2))
    log("wave, naive: one Remove call per instance, serially")
    r["wave_naive_seconds"] = round(wave_naive(*wave, rps), 2)

    idle_seconds = 10 if quick else 60
    log(f"idle: {idle_seconds}s on an empty queue")
    rss, cpu, per_hour = cost.idle(idle_seconds)
    r.update(idle_rss_mb=round(rss, 1), idle_cpu_percent=round(cpu, 2), idle_receive_calls_per_hour=round(per_hour))
    # Past MNS's long-poll limit every receive answers at once; 2 s polls give enough samples
    # in a short window. The bound is 3600 / wait_seconds; the first 10 s (the ramp) not counted.
    log(f"idle past the long-poll limit: {idle_seconds}s, wait_seconds 2")
    _, cpu, per_hour = cost.idle(idle_seconds, wait_seconds=2, long_poll_limit=0, settle=10)
    r.update(idle_receive_calls_per_hour_past_long_poll_limit=round(per_hour),
             idle_receive_calls_bound_per_hour=3600 // 2, idle_cpu_percent_past_long_poll_limit=round(cpu, 2))
    r["help_seconds"] = round(statistics.median(help_seconds() for _ in range(5)), 3)
    r.update(compare_stores(n, repeats, quick, args.rtt_ms))

    r["goals"] = goals.check(r)
    log("goals:\n" + goals.table(r["goals"]))
    if args.json:
        print(json.dumps(r))
    else:
        width = max(map(len, r))
        for key, value in r.items():
            if key != "goals":
                print(f"{key:<{width}}  {value}")
        print(goals.table(r["goals"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
