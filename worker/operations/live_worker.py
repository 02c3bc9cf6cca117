"""What a running worker on this host says at its `[metrics] listen` address: `doctor` asks it
(is the address the worker's own, and what it is doing) rather than guessing from a busy port; `metrics_check` is doctor's line for that address."""
from __future__ import annotations

import socket

from .doctor_lines import FAIL, PASS, Check


def healthz_status(host: str, port: int) -> str | None:
    """The status a running worker's /healthz reports on that address, or None if it is not one."""
    import json
    import urllib.error
    import urllib.request

    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as r:
            body = json.loads(r.read(4096))
    except urllib.error.HTTPError as exc:  # 503: a worker whose loop is stalled
        try:
            body = json.loads(exc.read(4096))
        except ValueError:
            return None
    except (OSError, ValueError):
        return None
    return str(body.get("status")) if isinstance(body, dict) and "seconds_since_poll" in body else None


def probes_seen(host: str, port: int) -> set[str] | None:
    """The `doctor --probe` ids a running worker at that address received (`/probes`), or None
    when no worker answers there."""
    import json
    import urllib.request

    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/probes"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as r:
            body = json.loads(r.read(65536))
    except (OSError, ValueError):
        return None
    rows = body.get("probes") if isinstance(body, dict) else None
    return {str(row.get("id")) for row in rows if isinstance(row, dict)} if isinstance(rows, list) else None


def metrics_check(listen: str) -> Check:
    """`doctor`'s `[metrics] listen` line: off, free, or already a running worker's own."""
    from ..observability.health import parse_listen

    if not listen:
        return Check(PASS, "metrics: off ([metrics] listen is empty)")
    host, port = parse_listen(listen)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, port))
    except OSError as exc:
        running = healthz_status(host, port)
        if running is not None:  # doctor on a live host: the address is the running worker's
            return Check(PASS, f"metrics: {listen} is served by a running ecs-worker (healthz: {running})")
        return Check(FAIL, f"metrics: cannot listen on {listen}: {exc.strerror or exc}",
                     "stop what holds that address or change [metrics] listen")
    return Check(PASS, f"metrics: {listen} is free")
