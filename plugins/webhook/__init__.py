"""Built-in `webhook` plugin: POST a notification per settled event to configured URLs.

Bodies: generic JSON (the `replay --json` row plus time and host), DingTalk markdown
and Slack text. Each target has its own event-name patterns and outcome filter.

Notifications are best-effort. `on_settled` only puts the notification on a bounded
in-memory queue and returns: a slow or dead receiver never holds a handler slot or
delays another plugin. One sender thread per target posts with a timeout, retries
connection errors, timeouts, 5xx and 429 with exponential backoff, and after `retries`
gives up with a warning. Nothing is persisted: a crash or a full queue loses
notifications (counted and logged), never events.

Webhook URLs carry secrets (DingTalk's `access_token` query, Slack's path), so logs and
errors show only the scheme, host and port. `url_file` / `secret_file` read them from a file
instead (a bare name is looked up in systemd's `$CREDENTIALS_DIRECTORY`), so `config.toml`
can stay 0644 with no secret in it. Deliveries, failures and drops are counted in the
`ecs_worker_webhook_notifications_total` metric.
"""
from __future__ import annotations

import threading

from ecs_worker import hookimpl

from .config import FORMATS, OUTCOMES, Config, Target
from .dingtalk import signed_url
from .fanout import WebhookFanout
from .http_post import Verdict, post, redact
from .render import json_body, render
from .sender import Sender

__all__ = ["Config", "Target", "WebhookPlugin", "WebhookFanout", "Sender", "Verdict", "FORMATS",
           "OUTCOMES", "json_body", "post", "redact", "render", "signed_url"]


class WebhookPlugin:
    """One registration: its fan-out (one sender thread per target) lives from `on_startup`
    (or the first `on_settled`) to `on_shutdown`."""

    name = "webhook"
    Config = Config

    def __init__(self) -> None:
        self.fanout: WebhookFanout | None = None
        self._lock = threading.Lock()

    @hookimpl
    def on_startup(self, ctx):
        self._fanout(ctx)

    @hookimpl
    def on_settled(self, event, result, ctx):
        fanout = self._fanout(ctx)  # lazily, for callers that skip on_startup
        if fanout is not None:
            fanout.notify(event, result)

    @hookimpl
    def on_shutdown(self, ctx):
        with self._lock:
            fanout, self.fanout = self.fanout, None
        if fanout is not None:
            fanout.close(ctx.config.drain_timeout)

    def _fanout(self, ctx) -> WebhookFanout | None:
        with self._lock:
            if self.fanout is None and ctx.config.targets:
                self.fanout = WebhookFanout(ctx.config)
            return self.fanout
