"""`CloudError`: what a failed ECS/SLB call looks like to plugins, and which ones to retry.

The SDK's exceptions can carry the signed request URL (with `Signature` and
`SecurityToken`) or the string-to-sign; ours carry the action, the error code and one
cleaned line of message, nothing else.
"""
from __future__ import annotations

import re

from ..text import clip

# Which failures are worth another try is decided by the code. The HTTP status decides only
# for a code on neither list (a 5xx is retried, anything else is not): the statuses of
# several busy codes are below 500 (SystemBusy 449, BackendServer.configuring 409) and some
# are not documented at all. Every code in both lists is tested (tests/test_cloud.py).
#
# Sources (docs/cloud-behaviour.md has the table):
# - terraform-provider-alicloud alicloud/errors.go: `SlbIsBusy` = SystemBusy, OperationBusy,
#   ServiceIsStopping, BackendServer.configuring, ServiceIsConfiguring; and `NeedRetry`:
#   ServiceUnavailable, Rejected.Throttling, any code matching "Throttling", any 5xx;
#   `DiskInvalidOperation` (retried around ECS instance operations): OperationConflict,
#   InvalidOperation.Conflict (IncorrectInstanceStatus is there too; we re-read instead).
# - CLB API reference (RemoveVServerGroupBackendServers, SetVServerGroupAttribute error codes):
#   VServerGroupProcessing, ProcessingSameRequest ("the same request is being processed").
# - POP gateway common errors: Throttling, Throttling.User, Throttling.Api, ServiceUnavailable
#   (503), InternalError (500); ECS StartInstance: InstanceNotReady, LastOrderProcessing.
# - Our own: SDK.HttpError (the core SDK's code for a failed connection or a timeout).
# Throttling: the request was refused before it did anything (the `startswith("Throttling")`
# test alone misses Rejected.Throttling).
THROTTLING_CODES = frozenset({"Throttling", "Throttling.User", "Throttling.Api", "Rejected.Throttling"})
RETRYABLE_CODES = THROTTLING_CODES | frozenset({
    # transient server trouble
    "ServiceUnavailable", "InternalError", "UnknownError", "SDK.HttpError",
    # CLB "busy with another change on this load balancer / group"
    "SystemBusy", "OperationBusy", "ServiceIsStopping", "BackendServer.configuring",
    "ServiceIsConfiguring", "VServerGroupProcessing", "ProcessingSameRequest",
    # ECS: the instance or an order on it is mid-change, or another request is changing it
    "InstanceNotReady", "LastOrderProcessing", "OperationConflict", "InvalidOperation.Conflict",
})
# The service's "too busy right now" for this one request, not a state of the load balancer
# (a change in progress is OperationBusy / VServerGroupProcessing / ...configuring): retried
# at the next rate-limit token, behind every call already waiting for one, with no sleep
# while the rate has room — `max_retries` times, then with backoff like the others (a
# streak that long is no momentary overload), `max_retries` times more.
RETRY_AT_NEXT_TOKEN = frozenset({"SystemBusy"})
# Codes no retry fixes, whatever their HTTP status: keys, permissions, the request itself,
# or the resource's state (the caller re-reads it; see plugins/restart.py).
PERMANENT_CODES = frozenset({
    "Forbidden.RAM", "NoPermission", "Forbidden", "Forbidden.NoPermission", "Forbidden.AccessKeyDisabled",
    "InvalidAccessKeyId.NotFound", "InvalidAccessKeyId.Inactive", "InvalidAccessKeySecret",
    "SignatureDoesNotMatch", "InvalidSecurityToken.Expired", "InvalidSecurityToken.Malformed",
    "InvalidSecurityToken.MismatchWithAccessKey", "IncompleteSignature",
    "MissingParameter", "InvalidParameter", "InvalidAction.NotFound", "InvalidVersion",
    "TooManyBackendServers",
    "InvalidInstanceId.NotFound", "InvalidLoadBalancerId.NotFound", "InvalidVServerGroupId.NotFound",
    "IncorrectInstanceStatus", "InstanceLockedForSecurity", "InstanceExpiredOrInArrears",
    "OperationDenied.NoStock", "DryRunOperation",
})
# The RAM action a denied call needs is named in the error (MNS's AccessDenied and the RPC
# APIs' Forbidden.RAM / NoPermission do not always say which action was refused). ALB and NLB
# answer a RAM denial with Forbidden.NoPermission (their API error tables).
RAM_DENIED_CODES = frozenset({"Forbidden.RAM", "NoPermission", "Forbidden.NoPermission", "AccessDenied"})

_QUERY = re.compile(r"(\?|&)[^\s'\"]*")          # a query string: signed parameters live here
_URL = re.compile(r"https?://[^\s'\"]+")
_SECRETISH = re.compile(r"(?i)(signature|securitytoken|security_token|accesskeysecret|secret)"
                        r"(\W{1,3})[^\s'\"&,;]+")
MAX_MESSAGE = 400  # whole: Alibaba's messages are a sentence or two; cut only at a word


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

    def retryable_for(self, retry_class: str) -> bool:
        """Under an API's retry class (`apis.py`): a call that is not idempotent is retried only
        when it was surely refused before acting (throttled), never after a timeout or a 5xx."""
        from .apis import REFUSED_ONLY

        if retry_class == REFUSED_ONLY:
            return self.code in THROTTLING_CODES or self.code.startswith("Throttling")
        return self.retryable


def is_retryable(code: str, http_status: int | None = None) -> bool:
    if code in RETRYABLE_CODES or code.startswith("Throttling"):
        return True
    if code in PERMANENT_CODES:
        return False
    return http_status is not None and http_status >= 500


def clean_message(message: object) -> str:
    """One line, no URL, no query string, nothing shaped like a secret, bounded length."""
    text = str(message or "").strip().splitlines()
    line = text[0] if text else ""
    line = _URL.sub("<url>", line)
    line = _QUERY.sub(r"\1<redacted>", line)
    line = _SECRETISH.sub(r"\1\2***", line)
    return clip(line, MAX_MESSAGE)


def from_sdk(action: str, exc: BaseException, api: str = "") -> CloudError:
    """Translate an aliyunsdkcore `ServerException` / `ClientException` without leaking;
    a permission error names the RAM action the call needs (`ecs:StartInstance`)."""
    code = getattr(exc, "get_error_code", lambda: None)() or type(exc).__name__
    status = getattr(exc, "get_http_status", lambda: None)()
    message = getattr(exc, "get_error_msg", lambda: str(exc))()
    request_id = getattr(exc, "get_request_id", lambda: None)()
    if code in ("SignatureDoesNotMatch", "InvalidAccessKeySecret"):
        message = "the request signature was rejected: check the AccessKey secret"  # the SDK quotes the string-to-sign
    if code in RAM_DENIED_CODES and api:
        from .apis import BY_KEY

        entry = BY_KEY.get((api, action))
        needed = " and ".join(entry.ram) if entry else f"{api}:{action}"
        message = f"the RAM policy does not allow {needed}: {clean_message(message)}"
    return CloudError(action, code, message, status, request_id)
