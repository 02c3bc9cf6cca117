"""`doctor --probe`: try to prove the whole chain, CloudMonitor → rule → queue → worker.

CloudMonitor's `SendDryRunSystemEvent` sends a marked test event (probes.py: one no built-in
acts on, in this version or an older one); doctor then watches for it — in a running worker's
record of probes (`/probes` on its metrics address: it logs them, acts on nothing, deletes
them), else in the queue with `BatchPeekMessage`, which consumes nothing but sees at most 16
active messages. Alibaba does not document that test events reach a rule's targets, so one
that does not arrive is "not proven" (`–`), not a failure. The calls need the operator's keys
(`cms:SendDryRunSystemEvent`, `mns:PeekMessage`; `setup` prints that policy), not the worker's.
"""
from __future__ import annotations

import json
import time
from typing import Any

from .doctor_lines import PASS, UNPROVEN, Check, denied
from ..observability.probes import SHAPES, probe_event, probe_id

WAIT_SECONDS = 20.0  # how long doctor watches (`--probe-wait`)
WHY_UNPROVEN = ("Alibaba does not document that SendDryRunSystemEvent's test events reach a rule's "
                "targets; and a peek sees at most 16 waiting messages")


def probe(doctor: Any, wait: float | None = None) -> Check:
    from ..cloud import CloudError
    from .ram_policy import mns_location
    from .setup import PRODUCT, event_names, rule_name, target_region

    config = doctor.config
    skipped = doctor.blocked("probe")
    if skipped:
        return skipped
    needed = event_names(doctor.plugins)
    name = next((n for n in SHAPES if not needed or n in needed), next(iter(SHAPES)))
    account = mns_location(config.mns.endpoint)[0] or "0"
    marker, event = probe_event(name, target_region(config), account)
    try:
        doctor.cloud.cms("SendDryRunSystemEvent", Product=PRODUCT, EventName=name, EventContent=json.dumps(event))
    except CloudError as exc:
        if denied(exc.code):
            return Check(UNPROVEN, f"probe: not sent: these credentials may not send test events ({exc.code}); "
                                   "run `doctor --probe` with the operator's keys (the policy `setup` prints "
                                   "grants cms:SendDryRunSystemEvent and mns:PeekMessage)")
        return doctor.failed("probe: SendDryRunSystemEvent", exc.code, exc.message, action="cms:SendDryRunSystemEvent")
    started = time.monotonic()
    where = _watch(doctor, marker, started + (WAIT_SECONDS if wait is None else wait))
    took = time.monotonic() - started
    if isinstance(where, Check):
        return where
    if where:
        return Check(PASS, f"probe: a test {name} event sent through CloudMonitor reached {where} in {took:.1f} s "
                           f"(rule {rule_name(config.mns.queue)}): the chain works")
    return Check(UNPROVEN, f"probe: not proven: the test {name} event (probe {marker}) did not arrive within "
                           f"{took:.0f} s; {WHY_UNPROVEN}")


def _watch(doctor: Any, marker: str, deadline: float) -> str | Check:
    """Where the probe was seen ("" if nowhere by `deadline`), or the line for a peek refused."""
    from ..queue.source import MnsError, MnsQueue

    config = doctor.config
    queue = MnsQueue(config.mns.endpoint, config.mns.queue, doctor.provider, 0, socket_timeout=doctor.timeout)
    while True:
        seen = _worker_record(config)
        if seen is not None and marker in seen:
            return f"the running worker (its /probes record) through queue {config.mns.queue}"
        if seen is None:  # no worker here: look in the queue, consuming nothing
            try:
                if any(_marker(body) == marker for body in queue.peek()):
                    return f"queue {config.mns.queue} (seen by BatchPeekMessage; a worker deletes it, acting on nothing)"
            except MnsError as exc:
                if exc.code in ("AccessDenied", "Forbidden"):
                    return Check(UNPROVEN, f"probe: sent, but not watched: these credentials may not peek at "
                                           f"{config.mns.queue} ({exc.code}); grant mns:PeekMessage or run with "
                                           "the operator's keys")
                return doctor.failed(f"probe: peek at {config.mns.queue}", exc.code or "Unknown", str(exc),
                                     service="mns", action="mns:PeekMessage")
        if time.monotonic() >= deadline:
            return ""
        time.sleep(0.5)


def _worker_record(config: Any) -> set[str] | None:
    from ..observability.health import parse_listen
    from .live_worker import probes_seen

    if not config.metrics.listen:
        return None
    return probes_seen(*parse_listen(config.metrics.listen))


def _marker(body: bytes) -> str | None:
    from ..events.body import decode_body

    try:
        return probe_id(decode_body(body).get("content") or {})
    except Exception:  # noqa: BLE001 - someone else's message, whatever it holds
        return None

