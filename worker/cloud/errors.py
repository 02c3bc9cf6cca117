"""`CloudError`: what a failed ECS/SLB call looks like to plugins, and which ones to retry.

The SDK's exceptions can carry the signed request URL (with `Signature` and
`SecurityToken`) or the string-to-sign; ours carry the action, the error code and one
cleaned line of message, nothing else.
"""
from __future__ import annotations

import re

# Codes worth another try (issue 5): throttling, transient server trouble, and SLB's
# "the group is busy with another change" family.
RETRYABLE_CODES = frozenset({
    "ServiceUnavailable", "InternalError", "SDK.HttpError",
    "OperationBusy", "VServerGroupProcessing", "ServiceIsConfiguring",
})

_QUERY = re.compile(r"(\?|&)[^\s'\"]*")          # a query string: signed parameters live here
_URL = re.compile(r"https?://[^\s'\"]+")
_SECRETISH = re.compile(r"(?i)(signature|securitytoken|security_token|accesskeysecret|secret)"
                        r"(\W{1,3})[^\s'\"&,;]+")
MAX_MESSAGE = 200


class CloudError(RuntimeError):
    """An ECS/SLB call that failed: `code` as the API names it, a clean one-line message."""

    def __init__(self, action: str, code: str, message: str = "", http_status: int | None = None,
                 request_id: str | None = None) -> None:
        self.action = action
        self.code = code
        self.message = clean_message(message)
        self.http_status = http_status
        self.request_id = request_id
        super().__init__(f"{action}: {code}" + (f": {self.message}" if self.message else ""))

    @property
    def retryable(self) -> bool:
        return is_retryable(self.code, self.http_status)


def is_retryable(code: str, http_status: int | None = None) -> bool:
    return (code.startswith("Throttling") or code in RETRYABLE_CODES
            or (http_status is not None and http_status >= 500))


def clean_message(message: object) -> str:
    """One line, no URL, no query string, nothing shaped like a secret, bounded length."""
    text = str(message or "").strip().splitlines()
    line = text[0] if text else ""
    line = _URL.sub("<url>", line)
    line = _QUERY.sub(r"\1<redacted>", line)
    line = _SECRETISH.sub(r"\1\2***", line)
    return line[:MAX_MESSAGE]


def from_sdk(action: str, exc: BaseException) -> CloudError:
    """Translate an aliyunsdkcore `ServerException` / `ClientException` without leaking."""
    code = getattr(exc, "get_error_code", lambda: None)() or type(exc).__name__
    status = getattr(exc, "get_http_status", lambda: None)()
    message = getattr(exc, "get_error_msg", lambda: str(exc))()
    request_id = getattr(exc, "get_request_id", lambda: None)()
    if code in ("SignatureDoesNotMatch", "InvalidAccessKeySecret"):
        message = "the request signature was rejected: check the AccessKey secret"  # the SDK quotes the string-to-sign
    return CloudError(action, code, message, status, request_id)
