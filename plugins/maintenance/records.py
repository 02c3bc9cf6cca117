"""What this host remembers per O&M event, in the plugin's state directory (`events.json`): when
it rebooted for the event (Alibaba advises 12 h between attempts) and which load-balancer
memberships it took out for the platform's reboot — so that whichever copy of a message settles
first (at-least-once delivery can hand out two) puts them all back, not only its own record."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

RETRY_SECONDS = 12 * 3600  # Alibaba: retry a failed handling no sooner than 12 h later
KEEP_SECONDS = 7 * 86400   # an event's record outlives any event's notice period
_lock = threading.Lock()   # handlers of one process update the file in turn


class EventRecords:
    def __init__(self, state_dir: Path | None) -> None:
        self.path = Path(state_dir) / "events.json" if state_dir is not None else None

    def get(self, event_id: str | None) -> dict:
        if not event_id or self.path is None:
            return {}
        with _lock:
            return dict(self._read().get(event_id) or {})

    def update(self, event_id: str | None, **fields: Any) -> None:
        """Set fields of the event's record (None removes one); old records are dropped."""
        if not event_id or self.path is None:
            return
        with _lock:
            known = self._read()
            now = time.time()
            known = {k: v for k, v in known.items() if now - float(v.get("updated", 0)) < KEEP_SECONDS}
            record = {**known.get(event_id, {}), **fields, "updated": now}
            known[event_id] = {k: v for k, v in record.items() if v is not None}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(known), encoding="utf-8")
            tmp.replace(self.path)

    def recently_rebooted(self, event_id: str | None) -> bool:
        when = self.get(event_id).get("rebooted_at")
        return isinstance(when, (int, float)) and time.time() - when < RETRY_SECONDS

    def _read(self) -> dict:
        try:
            known = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in known.items() if isinstance(v, dict)} if isinstance(known, dict) else {}
