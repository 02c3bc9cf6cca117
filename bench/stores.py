"""The shared state store's cost (issue 22): throughput and lag with the SQLite store, with
Redis on loopback and with Redis behind a proxy adding `rtt_ms` a round trip
(`store_bench.py`); MNS at the same modelled round trip throughout.

The throughput runs go round-robin over the stores (and, with a baseline — `--store-only
--baseline REV` — each run of this tree is followed by the same run of the baseline's
worker, against the same servers), so a drift in a shared machine's load hits every
column alike; the figures are reported side by side."""
from __future__ import annotations

import statistics

import cost
import kit
import store_bench
from kit import log
from speed import throughput_worker

STORES = ("sqlite", "redis", "redis_rtt")


def compare_stores(n: int, repeats: int, quick: bool, rtt_ms: float, baseline: str = "") -> dict:
    """This tree's figures; with `baseline` (a package root, `run.baseline_tree`) the
    baseline's too, under "baseline", measured alternately with this tree's."""
    kit.RTT_MS = rtt_ms
    trees = {"": "", **({"baseline": baseline} if baseline else {})}  # name -> WORKER_PYTHONPATH
    found: dict = {tree: {"store_rtt_ms": rtt_ms} for tree in trees}
    with store_bench.redis_server() as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with store_bench.delaying_proxy(port, rtt_ms) as proxied:
            urls = dict(zip(STORES, ("", url, f"redis://127.0.0.1:{proxied}/0")))
            runs: dict = {(name, tree): [] for name in urls for tree in trees}
            for i in range(repeats):  # round-robin: a drift in the machine's load hits every column
                for name, store in urls.items():
                    log(f"store {name}, run {i + 1}/{repeats}: {n} events")
                    for tree, path in trees.items():
                        runs[name, tree].append(_as(path, throughput_worker, n, store)[0])
                        log(f"  {tree or 'this tree'}: {runs[name, tree][-1]:.1f} events/s")
            for name, store in urls.items():
                log(f"store {name}: lag at 200 events/s")
                for tree, path in trees.items():
                    out = found[tree]
                    out[f"store_{name}_events_per_s"] = round(statistics.median(runs[name, tree]), 1)
                    p50, p99, _ = _as(path, cost.steady, 200, 5 if quick else 15, store)
                    out[f"store_{name}_lag_p50_ms"], out[f"store_{name}_lag_p99_ms"] = round(p50, 1), round(p99, 1)
    for out in found.values():
        base = out["store_sqlite_events_per_s"]
        out["store_redis_ratio_vs_sqlite"] = round(out["store_redis_events_per_s"] / base, 2)
        out["store_redis_rtt_ratio_vs_sqlite"] = round(out["store_redis_rtt_events_per_s"] / base, 2)
    out = found[""]
    if baseline:
        out["baseline"] = found["baseline"]
    return out


def _as(path: str, fn, *args):
    """`fn(*args)` with the worker process importing the tree at `path` ("" = this one)."""
    kit.WORKER_PYTHONPATH = path
    try:
        return fn(*args)
    finally:
        kit.WORKER_PYTHONPATH = ""
