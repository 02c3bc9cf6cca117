"""MNS's error replies, in its words: `MnsErrorResponse` (HTTP status, `<Code>`, `<Message>`)
and the ones the queues and the router raise; `int_arg` checks an integer request argument."""
from __future__ import annotations


class MnsErrorResponse(Exception):
    """An MNS error response: HTTP status, `<Code>`, `<Message>`."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


def queue_not_exist(name: str) -> MnsErrorResponse:
    return MnsErrorResponse(404, "QueueNotExist", f"The queue name you provided is not exist: {name}.")


def message_not_exist() -> MnsErrorResponse:
    return MnsErrorResponse(404, "MessageNotExist", "Message not exist.")


def receipt_handle_error() -> MnsErrorResponse:
    return MnsErrorResponse(400, "ReceiptHandleError", "The receipt handle you provided is not valid.")


def invalid_argument(message: str) -> MnsErrorResponse:
    return MnsErrorResponse(400, "InvalidArgument", message)


def int_arg(value: str | None, name: str, lo: int, hi: int) -> int:
    """An integer request argument in lo..hi, else 400 InvalidArgument with MNS's wording."""
    try:
        n = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise invalid_argument(f"The value of {name} should be an integer.") from None
    if not lo <= n <= hi:
        raise invalid_argument(f"The value of {name} should between {lo} and {hi}.")
    return n
