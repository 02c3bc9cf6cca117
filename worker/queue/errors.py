"""MNS errors as the worker sees them: every SDK failure becomes one `MnsError` — a one-line,
secret-free message, the server code, and whether retrying can ever help (transient: back off and
carry on; permanent: the configuration or the account is wrong)."""
from __future__ import annotations

from ..text import clip, one_line

# Codes that no amount of retrying fixes: the configuration (or the account) is wrong.
# Source: MNS "Error codes" (alibabacloud.com/help/en/mns/error-codes): AccessDenied,
# InvalidAccessKeyId, SignatureDoesNotMatch (403), QueueNotExist (404), InvalidQueueName,
# QueueDeletedRecently, Missing/InvalidAuthorizationHeader (400); STS token codes from the SDK.
# Everything else (InternalError/InternalServerError 500, TooManyRequests 429, QpsLimitExceeded,
# TimeExpired 408, network errors) is transient: the runner backs off and tries again.
PERMANENT_CODES = frozenset({
    "QueueNotExist", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
    "InvalidAccessKeyId.NotFound", "InvalidAccessKeyId.Inactive", "Forbidden",
    "InvalidQueueName", "QueueDeletedRecently", "SecurityTokenExpired", "InvalidSecurityToken",
    "MissingAuthorizationHeader", "InvalidAuthorizationHeader",
})
# A receipt handle that is stale: the message became visible again or was deleted.
STALE_HANDLE_CODES = frozenset({"MessageNotExist", "ReceiptHandleError"})
EMPTY_POLL = "MessageNotExist"
RAM_DENIED = "AccessDenied"  # MNS's answer when the RAM policy refuses a call (MNS error codes)
# A receipt handle of no message: deleting it changes nothing, and RAM is checked before the
# handle, so the answer proves (or refuses) the delete permission at start-up.
PROBE_HANDLE = "1-AAAAAAAAAAEAAAAAAAAAAA=="
# A send the dead-letter queue will never take, however often it is tried: the
# configuration's codes, and a body the queue refuses (MNS answers InvalidArgument for a
# body over MaximumMessageSize; MessageBodyTooLarge is kept for older endpoints).
REFUSED_CODES = frozenset({"InvalidArgument", "MessageBodyTooLarge", "MalformedXML"})

class MnsError(Exception):
    """An MNS failure with a one-line, secret-free message and its server code."""

    def __init__(self, message: str, code: str = "", permanent: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent

    @property
    def stale_handle(self) -> bool:
        return self.code in STALE_HANDLE_CODES

    @property
    def denied(self) -> bool:
        """Refused by RAM: no retry helps until the policy changes."""
        return self.code == RAM_DENIED


def classify(exc: BaseException, what: str, ram: str = "", endpoint: str = "") -> MnsError:
    """Turn an SDK exception into an `MnsError`; the text never carries request bodies.
    `ram` ("mns:X on acs:mns:...") is named when the server answers AccessDenied; a network
    error names `endpoint`, so an operator sees which address is unreachable."""
    from mns.mns_exception import (MNSClientNetworkException, MNSClientParameterException,
                                   MNSServerException)

    if isinstance(exc, MnsError):
        return exc
    if isinstance(exc, MNSServerException):
        code = exc.type or "Unknown"
        detail = (exc.message or "").strip().splitlines()
        text = f"{what}: {code}: {clip(detail[0]) if detail else ''} (request {exc.request_id})"
        if code == "AccessDenied" and ram:
            text += f"; the RAM policy must allow {ram}"
        return MnsError(text, code, permanent=code in PERMANENT_CODES)
    if isinstance(exc, MNSClientNetworkException):
        # The SDK puts the raw response into RespDataDamaged messages: keep only the type.
        return MnsError(f"{what}: network error{f' reaching {endpoint}' if endpoint else ''}: {exc.type}"
                        + (f": {clip(str(exc.message))}" if exc.type == "NetWorkException" else ""),
                        exc.type)
    if isinstance(exc, MNSClientParameterException):
        return MnsError(f"{what}: {exc.type}: {clip(str(exc.message))}", exc.type, permanent=True)
    return MnsError(f"{what}: {one_line(exc)}", type(exc).__name__)


def own_action(action: str) -> str:
    """The RAM action an MNS API's own page names (`mns:BatchReceiveMessage`). The worker passes
    the API registry's answer instead (`cloud.apis.mns_ram`), which names every reading."""
    return f"mns:{action}"


def refused_for_good(exc: MnsError) -> bool:
    """A send that no retry will get through (see `REFUSED_CODES`)."""
    return exc.permanent or exc.code in REFUSED_CODES
