"""One webhook POST and what its answer means; URLs shown with their secrets cut out."""
from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from .dingtalk import DINGTALK_RATE_LIMITED, signed_url


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


def post(target, body: bytes, timeout: float) -> Verdict:
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
        return dingtalk_verdict(reply)
    return Verdict(True)


def dingtalk_verdict(reply: bytes) -> Verdict:
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
