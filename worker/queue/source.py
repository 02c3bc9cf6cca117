"""The MNS queue, as the runner sees it: receive a batch, delete a batch, change
visibility, send (to the dead-letter queue) — and every MNS error sorted into
transient (back off and carry on) or permanent (configuration: stop at start-up).

The SDK's `Account`/`Queue` hold one persistent HTTP connection and are not
thread-safe, so each thread gets its own client. Bodies are received with
`set_encoding(False)`: whether a body is base64 is decided by `parse_event`, not guessed.
"""
from __future__ import annotations

import random
import threading
import time
import warnings
from dataclasses import dataclass

from ..backoff import backoff_delay
from ..text import one_line

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
MAX_BATCH = 16  # MNS's limit for batch receive and batch delete
MAX_MESSAGE_BYTES = 65536  # MNS's default (and largest) MaximumMessageSize
# A send the dead-letter queue will never take, however often it is tried: the
# configuration's codes, and a body the queue refuses (MNS answers InvalidArgument for a
# body over MaximumMessageSize; MessageBodyTooLarge is kept for older endpoints).
REFUSED_CODES = frozenset({"InvalidArgument", "MessageBodyTooLarge", "MalformedXML"})
SOCKET_SLACK = 15  # seconds a socket read may outlast the long poll before it is a dead connection
# An empty answer to a long poll that comes back before half its wait is not "nothing there
# for wait_seconds": past the account's long-polling limit MNS answers at once (and bills it).
# Back off (doubling from EARLY_EMPTY_BASE, capped at the poll's own wait, jittered upwards)
# so an idle receiver never costs more than 3600 / wait_seconds calls an hour.
EARLY_EMPTY_BASE = 0.5
EARLY_EMPTY_JITTER = 0.25  # what backoff's "up" jitter adds at most, as a fraction
FAULT_BASE, FAULT_CAP = 0.5, 30.0  # MNS faults: first and longest pause, jittered


class MnsError(Exception):
    """An MNS failure with a one-line, secret-free message and its server code."""

    def __init__(self, message: str, code: str = "", permanent: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent

    @property
    def stale_handle(self) -> bool:
        return self.code in STALE_HANDLE_CODES


@dataclass(frozen=True)
class Message:
    id: str
    receipt_handle: str
    body: bytes
    dequeue_count: int
    enqueue_time_ms: int
    first_dequeue_time_ms: int
    next_visible_time_ms: int = 0


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
        text = f"{what}: {code}: {detail[0][:200] if detail else ''} (request {exc.request_id})"
        if code == "AccessDenied" and ram:
            text += f"; the RAM policy must allow {ram}"
        return MnsError(text, code, permanent=code in PERMANENT_CODES)
    if isinstance(exc, MNSClientNetworkException):
        # The SDK puts the raw response into RespDataDamaged messages: keep only the type.
        return MnsError(f"{what}: network error{f' reaching {endpoint}' if endpoint else ''}: {exc.type}"
                        + (f": {str(exc.message)[:120]}" if exc.type == "NetWorkException" else ""),
                        exc.type)
    if isinstance(exc, MNSClientParameterException):
        return MnsError(f"{what}: {exc.type}: {str(exc.message)[:200]}", exc.type, permanent=True)
    return MnsError(f"{what}: {one_line(exc)}", type(exc).__name__)


class MnsQueue:
    """One MNS queue; every method is safe to call from any thread."""

    def __init__(self, endpoint: str, name: str, credentials_provider, wait_seconds: int = 20) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise MnsError(f"[mns] endpoint {endpoint!r}: must start with https:// (or http:// "
                           "for a local emulator)", permanent=True)
        self.endpoint = endpoint.rstrip("/")
        self.name = name
        self._credentials = credentials_provider
        self._timeout = wait_seconds + SOCKET_SLACK
        self._local = threading.local()
        self.early_empties = 0  # consecutive long polls answered empty before half their wait

    def __repr__(self) -> str:
        return f"MnsQueue({self.endpoint!r}, {self.name!r})"

    def _queue(self):
        queue = getattr(self._local, "queue", None)
        if queue is None:
            from mns.account import Account  # lazy: keeps `ecs-worker --help` fast

            account = Account(self.endpoint, credentials_provider=self._credentials)
            client = account.get_client()
            client.set_connection_timeout(self._timeout)  # http: a dropped peer cannot hang us
            client.http.conn.timeout = self._timeout  # https: the SDK sets no timeout at all
            queue = account.get_queue(self.name)
            queue.set_encoding(False)
            self._local.queue = queue
        return queue

    def _ram(self, action: str, messages: bool = True) -> str:
        """The RAM action and resource a call needs (MNS API reference, "Authorization")."""
        return f"mns:{action} on acs:mns:*:*:/queues/{self.name}" + ("/messages" if messages else "")

    def visibility_timeout(self) -> int:
        """The queue's own VisibilityTimeout; also proves the queue exists and the keys work."""
        try:
            with warnings.catch_warnings():  # the SDK warns about depth fields we do not read
                warnings.simplefilter("ignore", DeprecationWarning)
                return int(self._queue().get_attributes().visibility_timeout)
        except Exception as exc:
            raise classify(exc, f"queue {self.name!r}",
                           self._ram("GetQueueAttributes", False), self.endpoint) from None

    def maximum_message_size(self) -> int:
        """The queue's MaximumMessageSize in bytes (MNS's default when it says nothing)."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                size = int(self._queue().get_attributes().maximum_message_size or 0)
        except (TypeError, ValueError):
            size = 0
        except Exception as exc:
            raise classify(exc, f"queue {self.name!r}",
                           self._ram("GetQueueAttributes", False), self.endpoint) from None
        return size if 1024 <= size <= MAX_MESSAGE_BYTES else MAX_MESSAGE_BYTES

    def receive(self, batch_size: int, wait_seconds: int, stop: threading.Event | None = None) -> list[Message]:
        """Long-poll for up to `batch_size` messages; an empty poll is an empty list.

        An empty answer well before `wait_seconds` (MNS past its long-poll limit) is followed
        by a backoff before returning, cut short when `stop` is set."""
        from mns.mns_exception import MNSServerException

        started = time.monotonic()
        try:
            raw = self._queue().batch_receive_message(batch_size, wait_seconds)
        except MNSServerException as exc:
            if exc.type == EMPTY_POLL:
                self._after_empty(wait_seconds, time.monotonic() - started, stop)
                return []
            raise classify(exc, f"receive from {self.name!r}",
                           self._ram("BatchReceiveMessage"), self.endpoint) from None
        except Exception as exc:
            raise classify(exc, f"receive from {self.name!r}",
                           self._ram("BatchReceiveMessage"), self.endpoint) from None
        self.early_empties = 0
        return [Message(m.message_id, m.receipt_handle, _bytes(m.message_body), int(m.dequeue_count),
                        int(m.enqueue_time), int(m.first_dequeue_time), int(m.next_visible_time or 0))
                for m in raw]

    def _after_empty(self, wait_seconds: int, took: float, stop: threading.Event | None) -> None:
        if wait_seconds <= 0 or took >= wait_seconds / 2:
            self.early_empties = 0  # an honest long poll: nothing came for its whole wait
            return
        self.early_empties += 1
        delay = early_empty_delay(self.early_empties, wait_seconds)
        if stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)

    def delete_batch(self, handles: list[str]) -> dict[str, MnsError]:
        """Delete up to 16 messages; return the handles that failed, each with its error.

        Raises `MnsError` only when the whole request failed (network, 5xx, throttling).
        """
        from mns.mns_exception import MNSServerException

        if not handles:
            return {}
        try:
            self._queue().batch_delete_message(list(handles))
        except MNSServerException as exc:
            if not exc.sub_errors:
                raise classify(exc, f"delete from {self.name!r}",
                               self._ram("BatchDeleteMessage"), self.endpoint) from None
            return {e["ReceiptHandle"]: MnsError(f"delete from {self.name!r}: {e['ErrorCode']}: "
                                                 f"{e['ErrorMessage'][:200]}", e["ErrorCode"])
                    for e in exc.sub_errors}
        except Exception as exc:
            raise classify(exc, f"delete from {self.name!r}",
                           self._ram("BatchDeleteMessage"), self.endpoint) from None
        return {}

    def change_visibility(self, handle: str, seconds: int) -> str:
        """Hide the message for `seconds` from now; return its new receipt handle."""
        try:
            return self._queue().change_message_visibility(handle, int(seconds)).receipt_handle
        except Exception as exc:
            raise classify(exc, f"change visibility in {self.name!r}",
                           self._ram("ChangeMessageVisibility"), self.endpoint) from None

    def send(self, body: str, delay_seconds: int = 0) -> str:
        """Send one message (visible after `delay_seconds`, 0..604800); return its id."""
        from mns.queue import Message as SdkMessage

        message = SdkMessage(body)
        if delay_seconds:
            message.set_delayseconds(int(delay_seconds))
        try:
            return self._queue().send_message(message).message_id
        except Exception as exc:
            raise classify(exc, f"send to {self.name!r}",
                           self._ram("SendMessage"), self.endpoint) from None


def early_empty_delay(n: int, wait_seconds: float, rng: random.Random | None = None) -> float:
    """Seconds to pause after the n-th early empty answer in a row: doubling, capped at the
    poll's wait, jitter only upwards so the capped rate stays under one call per wait."""
    return backoff_delay(n - 1, EARLY_EMPTY_BASE, float(wait_seconds), "up", rng)


def fault_delay(failures: int, rng: random.Random | None = None) -> float:
    """Seconds to pause after the n-th MNS fault in a row: doubling, capped, half jittered."""
    return backoff_delay(failures - 1, FAULT_BASE, FAULT_CAP, "half", rng)


def refused_for_good(exc: MnsError) -> bool:
    """A send that no retry will get through (see `REFUSED_CODES`)."""
    return exc.permanent or exc.code in REFUSED_CODES


def _bytes(body) -> bytes:
    if isinstance(body, bytes):
        return body
    return str(body).encode("utf-8", "surrogatepass")
