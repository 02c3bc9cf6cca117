"""DingTalk robots: the signed URL (`timestamp` and `sign`) of a robot with a signing secret."""
from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse

DINGTALK_RATE_LIMITED = 130101  # errcode: "sending too fast" (20 messages a minute per robot)


def signed_url(url: str, secret: str) -> str:
    """DingTalk's signed-robot URL: `timestamp` (ms) and `sign`, HMAC-SHA256 of both."""
    stamp = str(round(time.time() * 1000))
    digest = hmac.new(secret.encode(), f"{stamp}\n{secret}".encode(), hashlib.sha256).digest()
    sign = urllib.parse.quote_plus(base64.b64encode(digest))
    return f"{url}{'&' if '?' in url else '?'}timestamp={stamp}&sign={sign}"
