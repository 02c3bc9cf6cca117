"""What `doctor` proves about the state store: reachable, writable, and on a sane clock and
eviction policy. Nothing is left behind but a probe key that expires in seconds."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ..config import Config, ConfigError
from .store_types import StoreError

MAX_SKEW = 5.0  # seconds between this host's clock and the store's before doctor says so
FULL = 0.8  # share of maxmemory in use past which an evicting policy is a failure
# Every key of ours has a TTL, so any policy but `noeviction` may evict them under memory
# pressure (a forgotten settled key runs a duplicate, a forgotten budget lets more through):
# fine with headroom, a failure when the instance is nearly full.


def probe(config: Config) -> tuple[bool, str, str]:
    """(ok, what was found, the fix when not ok)."""
    if not config.worker.store:
        return _probe_dir(Path(config.worker.state_dir))
    from .store_open import open_store, shown

    where = shown(config.worker.store)
    try:
        store = open_store(config)
    except (ConfigError, StoreError) as exc:
        return False, f"state store {where}: {exc}", "check [worker] store and store_password_file"
    try:
        client = store.client
        key = store.prefix + "doctor"
        client.set(key, socket.gethostname(), px=10_000)
        if client.get(key) is None:
            return False, f"state store {where}: a write did not read back", "check the server's persistence and ACLs"
        skew = store.server_time() - time.time()
        info = client.info()
        policy, version = info.get("maxmemory_policy", "?"), info.get("redis_version", "?")
        used, limit = int(info.get("used_memory") or 0), int(info.get("maxmemory") or 0)
    except Exception as exc:  # noqa: BLE001 - whatever the client raises is a failed check
        return False, f"state store {where}: {type(exc).__name__}: {exc}", \
            "check the address, the network (security group / whitelist) and the password"
    finally:
        store.close()
    full = used / limit if limit else 0.0
    found = (f"state store {where}: writable, Redis {version}, clock {skew:+.1f}s, maxmemory-policy {policy}"
             + (f", {full:.0%} of maxmemory used" if limit else ""))
    if policy != "noeviction" and full > FULL:
        return False, found, "the instance is nearly full and may evict our keys: give it room (docs/scale-out.md)"
    if abs(skew) > MAX_SKEW:
        return False, found, "this host's clock is off (budgets use the server's clock; logs and notBefore use ours): run chrony"
    return True, found, ""


def _probe_dir(state_dir: Path) -> tuple[bool, str, str]:
    """SQLite in `state_dir`: the directory (or the nearest that exists, which `run` creates
    it under) must be writable by this user."""
    existing = state_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if os.access(existing, os.W_OK | os.X_OK) and existing.is_dir():
        made = "" if existing == state_dir else " (created on first run)"
        return True, f"state store: SQLite in {state_dir}{made}, writable", ""
    return False, f"state store: {existing} is not writable by this user", \
        f"create {state_dir} owned by the service user, or set [worker] state_dir"
