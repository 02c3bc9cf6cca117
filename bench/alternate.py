"""Throughput of several revisions of the worker, in alternating runs (docs/benchmarks.md):
on a shared machine only figures taken turn about, against the same emulator code and
bench, compare. Optionally profiles each run's worker process with py-spy.

    python bench/alternate.py [--runs 5] [--events 5000] [--rtt-ms 2] [--ceiling] [--py-spy DIR [--gil]] REV ...

`REV` is a git revision, `.` for this tree (as it is on disk), or another checkout's
directory (its `worker/` and `plugins/`: an experiment not worth a commit). Prints, per revision,
the median and range of events/s and of the worker's CPU ms per event (with --ceiling,
the median of its runs' ratios to the bare SDK loop run in the same round); with --json the
last line is one JSON object. --py-spy writes `DIR/<rev>-<run>.txt` (py-spy's raw
collapsed stacks, all threads, busy or waiting on the GIL; with --gil only the
thread holding it) for each run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import kit  # noqa: E402 - the bench's own modules, beside this file
from kit import LOG_ONLY, base_state, cpu_seconds, emulator, event_body, log, wait_until, worker, worker_config  # noqa: E402
from run import baseline_tree  # noqa: E402
from speed import throughput_ceiling  # noqa: E402


def tree(rev: str, into: Path) -> Path:
    """A revision's, or a checkout directory's, `ecs_worker` package laid out under `into`."""
    if not Path(rev).is_dir():
        return baseline_tree(rev, into)
    shutil.copytree(Path(rev) / "worker", into / "pkg" / "ecs_worker")
    shutil.copytree(Path(rev) / "plugins", into / "pkg" / "ecs_worker" / "plugins")
    return into / "pkg"


def one_run(n: int, profile: Path | None, gil: bool = False) -> tuple[float, float]:
    """`speed.throughput_worker`, with py-spy attached to the worker when `profile` names a file."""
    with emulator(base_state()) as emu, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        emu.fill([event_body(i) for i in range(n)])
        with worker(worker_config(emu, tmp, LOG_ONLY, log_level="INFO"), tmp / "worker.log") as proc:
            spy = None
            if profile is not None:
                spy = subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
                                        "record", "--pid", str(proc.pid), "--threads", "--rate", "200",
                                        "--format", "raw", "--output", str(profile), "--nonblocking", *(["--gil"] if gil else [])],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            start, cpu0 = time.monotonic(), cpu_seconds(proc.pid)
            end = wait_until(lambda: emu.depth() == 0, timeout=300, every=0.02)
            cpu = cpu_seconds(proc.pid) - cpu0
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=30)
        return n / (end - start), 1000 * cpu / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revs", nargs="+", metavar="REV")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rtt-ms", type=float, default=2.0)
    parser.add_argument("--py-spy", type=Path, metavar="DIR")
    parser.add_argument("--gil", action="store_true", help="py-spy: only the thread holding the GIL")
    parser.add_argument("--ceiling", action="store_true",
                        help="also run the bare SDK loop each round: each revision's ratio to it")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    kit.RTT_MS = args.rtt_ms
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    figures: dict[str, list[tuple[float, float]]] = {rev: [] for rev in args.revs}
    ceilings: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for i, rev in enumerate(args.revs):
            (Path(tmp) / str(i)).mkdir()
            trees[rev] = "" if rev == "." else str(tree(rev, Path(tmp) / str(i)))
        for run in range(args.runs):
            if args.ceiling:
                ceilings.append(throughput_ceiling(args.events)[0])
                log(f"run {run + 1} bare SDK loop: {ceilings[-1]:.0f} events/s")
            order = args.revs[run % len(args.revs):] + args.revs[:run % len(args.revs)]  # each leads in turn
            for rev in order:
                kit.WORKER_PYTHONPATH = trees[rev]
                profile = args.py_spy / f"{rev.replace('/', '_')}-{run + 1}.txt" if args.py_spy else None
                events_per_s, cpu_ms = one_run(args.events, profile, args.gil)
                figures[rev].append((events_per_s, cpu_ms))
                log(f"run {run + 1} {rev}: {events_per_s:.0f} events/s, {cpu_ms:.3f} cpu ms/event")
    kit.WORKER_PYTHONPATH = ""
    out = {}
    for rev, runs in figures.items():
        rates, cpus = [r for r, _ in runs], [c for _, c in runs]
        out[rev] = {"events_per_s": round(statistics.median(rates)), "events_per_s_range": [round(min(rates)), round(max(rates))],
                    "cpu_ms_per_event": round(statistics.median(cpus), 3),
                    "cpu_ms_range": [round(min(cpus), 3), round(max(cpus), 3)]}
        if ceilings:  # each run against the bare loop's run of the same round
            out[rev]["ratio_vs_ceiling"] = round(statistics.median(r / c for r, c in zip(rates, ceilings)), 2)
        log(f"{rev}: median {out[rev]['events_per_s']} events/s {out[rev]['events_per_s_range']}, "
            f"{out[rev]['cpu_ms_per_event']} cpu ms/event {out[rev]['cpu_ms_range']}"
            + (f", {out[rev]['ratio_vs_ceiling']}x the bare loop" if ceilings else ""))
    if ceilings:
        out["ceiling_events_per_s"] = round(statistics.median(ceilings))
    if args.json:
        print(json.dumps({"runs": args.runs, "events": args.events, "rtt_ms": args.rtt_ms, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
