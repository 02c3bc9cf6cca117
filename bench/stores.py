"""The shared state store's cost (issue 22): throughput and lag with the SQLite store, with
Redis on loopback and with Redis behind a proxy adding `rtt_ms` a round trip
(`store_bench.py`); MNS at the same modelled round trip throughout."""
from __future__ import annotations

import cost
import kit
import store_bench
from kit import log, median_of
from speed import throughput_worker


def compare_stores(n: int, repeats: int, quick: bool, rtt_ms: float) -> dict:
    kit.RTT_MS = rtt_ms
    out: dict = {"store_rtt_ms": rtt_ms}
    with store_bench.redis_server() as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with store_bench.delaying_proxy(port, rtt_ms) as proxied:
            for name, store in (("sqlite", ""), ("redis", url), ("redis_rtt", f"redis://127.0.0.1:{proxied}/0")):
                log(f"store {name}: {n} events, then lag at 200 events/s")
                out[f"store_{name}_events_per_s"] = round(median_of(throughput_worker, repeats, n, store)[0], 1)
                p50, p99, _ = cost.steady(200, 5 if quick else 15, store)
                out[f"store_{name}_lag_p50_ms"], out[f"store_{name}_lag_p99_ms"] = round(p50, 1), round(p99, 1)
    base = out["store_sqlite_events_per_s"]
    out["store_redis_ratio_vs_sqlite"] = round(out["store_redis_events_per_s"] / base, 2)
    out["store_redis_rtt_ratio_vs_sqlite"] = round(out["store_redis_rtt_events_per_s"] / base, 2)
    out["store_redis_rtt_goal"] = ">= 0.85 (the shared store costs at most 15 % at the modelled round trip)"
    return out
