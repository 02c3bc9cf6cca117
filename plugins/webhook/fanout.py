"""Fan-out: each settled event's notification built once, queued for every target that wants it."""
from __future__ import annotations

import socket
import time

from .config import Config
from .render import json_body
from .sender import Sender


class WebhookFanout:
    """Builds each notification once and queues it for every target that wants it."""

    def __init__(self, cfg: Config) -> None:
        self.host = socket.gethostname()
        self.senders = [Sender(i, t.resolved(), cfg) for i, t in enumerate(cfg.targets)]
        for sender in self.senders:
            sender.start()

    def notify(self, event, result) -> None:
        name = event.name if event is not None else ""  # an invalid body has no name
        wanted = [s for s in self.senders if s.target.wants(name, result.outcome)]
        if not wanted:
            return
        payload = json_body(event, result, self.host)
        for sender in wanted:
            sender.put(payload)

    def close(self, timeout: float) -> None:
        """Flush what is queued, waiting at most `timeout` seconds in all."""
        deadline = time.monotonic() + timeout
        for sender in self.senders:
            sender.finish()
        for sender in self.senders:
            sender.join(max(0.0, deadline - time.monotonic()))
        for sender in self.senders:
            sender.abandon()

    def stats(self) -> dict[str, dict[str, int]]:
        return {s.target.label: dict(s.counts) for s in self.senders}
