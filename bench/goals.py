"""The goals the bench checks (issues 21 and 22), each with its bound, in one table; `check`
prints each and returns them for the JSON."""
from __future__ import annotations

LONE_EVENT_SLACK_MS = 50  # a lone event may wait at most this much longer than the baseline's

# (key, "<=" or ">=", bound) — a bound that is a key's name is read from the results.
GOALS = (
    ("mns_requests_per_1000_events_at_100_per_s", "<=", 500),
    ("lag_p99_ms_at_100_per_s", "<=", 250),
    ("mns_requests_per_1000_events_at_200_per_s", "<=", 500),
    ("lag_p99_ms_at_200_per_s", "<=", 250),
    ("mns_requests_per_1000_events_backlog", "<=", 140),
    ("lone_event_lag_ms", "<=", "lone_event_lag_ms_bound"),
    ("wave_ratio_vs_ideal", "<=", 1.10),
    ("wave_busy_ratio_vs_ideal", "<=", 1.10),
    ("throughput_ratio_vs_ceiling", ">=", 0.9),
    ("store_redis_rtt_ratio_vs_sqlite", ">=", 0.85),  # the shared store at the modelled round trip
)


def check(results: dict) -> list[dict]:
    """Each goal with its value, bound and verdict (None: not measured in this run)."""
    out = []
    for key, op, bound in GOALS:
        if isinstance(bound, str):
            bound = results.get(bound)
        value = results.get(key)
        met = None if value is None or bound is None else (value <= bound if op == "<=" else value >= bound)
        out.append({"key": key, "value": value, "op": op, "bound": bound, "met": met})
    return out


def lone_event_bound(baseline: dict) -> float | None:
    base = baseline.get("lone_event_lag_ms")
    return None if base is None else round(base + LONE_EVENT_SLACK_MS, 1)


def table(goals: list[dict]) -> str:
    word = {True: "met", False: "NOT MET", None: "not measured"}
    return "\n".join(f"{g['key']:<45} {g['value']!s:>9} {g['op']} {g['bound']!s:<9} {word[g['met']]}"
                     for g in goals)
