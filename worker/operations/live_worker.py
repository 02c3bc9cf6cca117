"""What a running worker on this host says at its `[metrics] listen` address: `doctor` asks it
(is the address the worker's own, and what it is doing) rather than guessing from a busy port."""
from __future__ import annotations


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
