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

import base64
import collections
import dataclasses
import hashlib
import hmac
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from typing import Any

from ecs_worker import hookimpl, metrics
from ecs_worker.config import ConfigError, setting

log = logging.getLogger("ecs_worker.plugin.webhook")

FORMATS = ("json", "dingtalk", "slack")
OUTCOMES = ("handled", "failed", "ignored", "invalid", "deferred")
MAX_BACKOFF = 60.0  # one notification never waits longer than this between tries
WARNING_INTERVAL = 30.0  # per target and kind: a dead receiver under load must not flood the log
DINGTALK_RATE_LIMITED = 130101  # errcode: "sending too fast" (20 messages a minute per robot)


@dataclass(frozen=True)
class Target:
    url: str = setting("", doc="http:// or https:// URL; may carry a token (never logged)")
    url_file: str = setting("", doc="read the URL from this file (bare name: in $CREDENTIALS_DIRECTORY)")
    format: str = setting("json", choices=FORMATS)
    events: list[str] = setting(["*"], doc="event-name patterns (fnmatch, case-sensitive)")
    outcomes: list[str] = setting(["handled", "failed", "invalid", "deferred"])
    secret: str = setting("", secret=True, doc="DingTalk signing secret (SEC...)")
    secret_file: str = setting("", doc="read the DingTalk secret from this file (bare name: in $CREDENTIALS_DIRECTORY)")
    name: str = setting("", doc="label in logs; default: the URL's host")

    def __post_init__(self) -> None:
        from ecs_worker.credentials import deferred, read_secret_file

        for key, file_key in (("url", "url_file"), ("secret", "secret_file")):
            name = getattr(self, file_key)
            if name:
                if getattr(self, key):
                    raise ConfigError(f"{key} and {file_key} are exclusive")
                if deferred(name):  # check-config in a shell: systemd hands the file to the service
                    continue
                text, _ = read_secret_file(name, file_key)
                object.__setattr__(self, key, text)
        if not self.url and not self.url_file:
            raise ConfigError("url: required (or url_file)")
        if self.url:
            self._check_url()
        unknown = [o for o in self.outcomes if o not in OUTCOMES]
        if unknown:
            raise ConfigError(f"outcomes: {unknown[0]!r} is not one of {', '.join(OUTCOMES)}")
        if not self.events:
            raise ConfigError("events: an empty list matches nothing; remove the target instead")
        if (self.secret or self.secret_file) and self.format != "dingtalk":
            raise ConfigError("secret: only DingTalk targets are signed")

    def resolved(self) -> "Target":
        """This target with the files deferred at parse time read now (at start-up, under
        systemd); `ConfigError` naming the key if one cannot be read."""
        from ecs_worker.credentials import read_secret_file

        changes = {}
        for key, file_key in (("url", "url_file"), ("secret", "secret_file")):
            if getattr(self, file_key) and not getattr(self, key):
                changes[key], _ = read_secret_file(getattr(self, file_key), file_key)
                changes[file_key] = ""
        return dataclasses.replace(self, **changes) if changes else self

    def _check_url(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The URL itself is not echoed: it may hold a token.
            raise ConfigError("url: must be an http:// or https:// URL with a host")
        try:
            parts.port
        except ValueError:
            raise ConfigError("url: invalid port") from None

    def __repr__(self) -> str:  # never print a token, even in a traceback
        return f"Target({self.label!r}, format={self.format!r})"

    @property
    def label(self) -> str:
        return self.name or redact(self.url)

    def wants(self, event_name: str, outcome: str) -> bool:
        return outcome in self.outcomes and any(fnmatchcase(event_name, p) for p in self.events)


@dataclass(frozen=True)
class Config:
    targets: list[Target] = setting([], doc="[[plugins.webhook.targets]] tables")
    timeout: float = setting(5.0, min=0.1, max=120, doc="seconds per connect / read")
    retries: int = setting(3, min=0, max=20, doc="further tries after the first fails")
    backoff: float = setting(1.0, min=0, max=60, doc="first retry delay; doubles per retry")
    queue_size: int = setting(1000, min=1, max=100000, doc="per target; the oldest is dropped")
    drain_timeout: float = setting(10.0, min=0, max=600, doc="seconds to flush on shutdown")


# -- hooks ---------------------------------------------------------------------------------
# One notifier per Runtime (not per module) so two runtimes in one process stay apart.
_notifiers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_notifiers_lock = threading.Lock()


@hookimpl
def on_startup(ctx):
    _notifier(ctx, create=True)


@hookimpl
def on_settled(event, result, ctx):
    notifier = _notifier(ctx, create=True)  # lazily, for callers that skip on_startup
    if notifier is not None:
        notifier.notify(event, result)


@hookimpl
def on_shutdown(ctx):
    with _notifiers_lock:
        notifier = _notifiers.pop(ctx.runtime, None)
    if notifier is not None:
        notifier.close(ctx.config.drain_timeout)


def _notifier(ctx, create: bool) -> Notifier | None:
    with _notifiers_lock:
        notifier = _notifiers.get(ctx.runtime)
        if notifier is None and create and ctx.config.targets:
            notifier = _notifiers[ctx.runtime] = Notifier(ctx.config)
        return notifier


# -- fan-out -------------------------------------------------------------------------------
class Notifier:
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


class Sender(threading.Thread):
    """One target's queue and its single sender thread.

    One thread per target keeps a dead receiver from delaying the others and keeps
    notifications in order; parallel posts would only trip the receivers' rate limits
    (a DingTalk robot takes 20 messages a minute).

    When the queue is full the *oldest* notification is dropped: by then the receiver
    has been failing for a while, and the newest notifications describe the fleet as
    it is now, which is what someone reading them after the outage needs.
    """

    def __init__(self, index: int, target: Target, cfg: Config) -> None:
        super().__init__(name=f"webhook-{index}", daemon=True)  # never blocks process exit
        self.index, self.target, self.cfg = index, target, cfg
        self.counts = collections.Counter(sent=0, failed=0, dropped=0)
        for result in ("sent", "failed", "dropped"):  # start at 0, so increase() sees the first
            metrics.WEBHOOK_NOTIFICATIONS.labels(target.label, result)
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._finishing = False
        self._abandoned = threading.Event()
        self._last_warning: dict[str, float] = {}
        self._held_back = collections.Counter()
        self._warn_lock = threading.Lock()

    def put(self, payload: dict[str, Any]) -> None:
        with self._cond:
            if self._abandoned.is_set():
                self._dropped(1, "the worker is shutting down")
                return
            if len(self._queue) >= self.cfg.queue_size:
                self._queue.popleft()
                self._dropped(1, f"queue full ({self.cfg.queue_size}), oldest dropped")
            self._queue.append(payload)
            self._cond.notify()

    def finish(self) -> None:
        """Stop when the queue is empty."""
        with self._cond:
            self._finishing = True
            self._cond.notify()

    def abandon(self) -> None:
        """Give up on what is left: cut backoff waits short, drop the queue."""
        self._abandoned.set()
        with self._cond:
            self._finishing = True
            left = len(self._queue)
            self._queue.clear()
            self._cond.notify()
        if left:
            self._dropped(left, "not sent before the shutdown deadline")

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._finishing:
                    self._cond.wait()
                if not self._queue:
                    return
                payload = self._queue.popleft()
            self._send(payload)

    def _send(self, payload: dict[str, Any]) -> None:
        body = json.dumps(render(self.target.format, payload), default=str).encode()
        why = ""
        for attempt in range(self.cfg.retries + 1):
            verdict = post(self.target, body, self.cfg.timeout)
            if verdict.ok:
                self.counts["sent"] += 1
                metrics.WEBHOOK_NOTIFICATIONS.labels(self.target.label, "sent").inc()
                log.debug("webhook %s: sent %s", self.target.label, payload["id"])
                return
            why = verdict.detail
            if not verdict.retryable or attempt == self.cfg.retries:
                break
            delay = verdict.retry_after if verdict.retry_after is not None \
                else self.cfg.backoff * 2 ** attempt
            log.debug("webhook %s: try %d failed (%s); again in %.2gs", self.target.label,
                      attempt + 1, why, delay)
            if self._abandoned.wait(min(delay, MAX_BACKOFF)):
                why += " (shutting down)"
                break
        self.counts["failed"] += 1
        metrics.WEBHOOK_NOTIFICATIONS.labels(self.target.label, "failed").inc()
        self._warn("failed", "webhook %s: gave up on the notification for %s after %d tries: %s "
                   "(%d failed so far)", self.target.label, payload["id"] or "an invalid message",
                   attempt + 1, why, self.counts["failed"])

    def _dropped(self, n: int, why: str) -> None:
        self.counts["dropped"] += n
        metrics.WEBHOOK_NOTIFICATIONS.labels(self.target.label, "dropped").inc(n)
        self._warn("dropped", "webhook %s: notification dropped: %s (%d dropped so far)",
                   self.target.label, why, self.counts["dropped"])

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        """At most one warning of a kind per interval; the next says how many were held back."""
        with self._warn_lock:
            now = time.monotonic()
            if now - self._last_warning.get(kind, float("-inf")) < WARNING_INTERVAL:
                self._held_back[kind] += 1
                return
            self._last_warning[kind] = now
            held, self._held_back[kind] = self._held_back[kind], 0
        log.warning(message + (f"; {held} similar warnings held back" if held else ""), *args)


# -- HTTP ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    ok: bool
    retryable: bool = False
    detail: str = ""
    retry_after: float | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirected POST would resend the body to a host nobody configured: treat as failure.
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def post(target: Target, body: bytes, timeout: float) -> Verdict:
    """One POST; classifies the response as sent, worth retrying, or hopeless."""
    url = signed_url(target.url, target.secret) if target.secret else target.url
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json; charset=utf-8", "User-Agent": "ecs-worker-webhook"})
    try:
        with _opener.open(request, timeout=timeout) as response:
            reply = response.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        exc.close()
        retry = exc.code == 429 or exc.code >= 500
        return Verdict(False, retry, f"HTTP {exc.code}", _retry_after(exc.headers) if retry else None)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        text = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
        return Verdict(False, True, _scrub(text, target.url))
    if target.format == "dingtalk":
        return _dingtalk_verdict(reply)
    return Verdict(True)


def _dingtalk_verdict(reply: bytes) -> Verdict:
    # DingTalk answers HTTP 200 with an errcode for bad tokens, keywords or signatures.
    try:
        doc = json.loads(reply)
        code = int(doc.get("errcode", 0))
    except (ValueError, TypeError, AttributeError):
        return Verdict(True)  # not DingTalk's JSON: the POST itself was accepted
    if code == 0:
        return Verdict(True)
    return Verdict(False, code == DINGTALK_RATE_LIMITED,
                   f"DingTalk errcode {code}: {str(doc.get('errmsg', ''))[:200]}")


def _retry_after(headers) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date: the exponential backoff will do


def signed_url(url: str, secret: str) -> str:
    """DingTalk's signed-robot URL: `timestamp` (ms) and `sign`, HMAC-SHA256 of both."""
    stamp = str(round(time.time() * 1000))
    digest = hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(), hashlib.sha256).digest()
    sign = urllib.parse.quote_plus(base64.b64encode(digest))
    return f"{url}{'&' if '?' in url else '?'}timestamp={stamp}&sign={sign}"


def redact(url: str) -> str:
    """Scheme, host and port only: tokens live in the path (Slack) or query (DingTalk)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    tail = "/..." if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{parts.hostname}{port}{tail}"


def _scrub(text: str, url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    for secret in (url, parts.query, parts.path if parts.path.strip("/") else ""):
        if secret:
            text = text.replace(secret, "...")
    return text


# -- bodies --------------------------------------------------------------------------------
def json_body(event, result, host: str) -> dict[str, Any]:
    """The generic body: the `replay --json` row plus when, where and the event summary."""
    return {**result.to_json(), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": host, "event": event.summary() if event is not None else None}


def render(fmt: str, payload: dict[str, Any]) -> dict[str, Any]:
    if fmt == "json":
        return payload
    title, lines = _summary(payload)
    if fmt == "dingtalk":
        text = f"### {title}\n\n" + "\n".join(f"- {line}" for line in lines)
        return {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
    return {"text": f"*{title}*\n" + "\n".join(f"• {line}" for line in lines)}


def _summary(p: dict[str, Any]) -> tuple[str, list[str]]:
    event = p["event"] or {}
    if not p["name"]:
        title = f"ecs-worker: invalid message ({p['outcome']})"
    else:
        title = f"{p['name']} {p['instance_id'] or '-'}: {p['outcome']}"
    lines = []
    detail = event.get("state") or event.get("action")
    if detail:
        lines.append(f"state: {detail}" if event.get("state") else f"action: {detail}")
    for key in ("region", "id"):
        if event.get(key):
            lines.append(f"{'event' if key == 'id' else key}: {event[key]}")
    for a in p["actions"]:
        lines.append(f"{a['plugin']}: {a['action']} {a['target']} -> {a['result']}"
                     f"{' (dry-run)' if a['dry_run'] else ''}")
    if p["error"]:
        lines.append(f"error: {p['error']}")
    lines.append(f"host: {p['host']}, {p['time']}")
    return title, lines
