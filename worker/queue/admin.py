"""The queues' attributes: what `setup` wants, what a queue has, and the calls that change them.

Attribute names and ranges: MNS CreateQueue / SetQueueAttributes references
(help/en/mns/developer-reference/createqueue): VisibilityTimeout 1..43200, PollingWaitSeconds
0..30, MessageRetentionPeriod 60..604800, DelaySeconds 0..604800. CreateQueue answers 201 for a
new queue, 204 when one of that name has the same attributes, 409 `QueueAlreadyExist` otherwise.
"""
from __future__ import annotations

import warnings
from typing import Any

from .source import classify

MAIN_RETENTION = 345600   # 4 days (the service default): events older than that are stale anyway
DLQ_RETENTION = 604800    # 7 days (the maximum): time for a person to look at dead letters


def wanted(config: Any, dead_letter: bool) -> dict[str, int]:
    """The attributes `setup` gives a queue (SDK QueueMeta names -> values)."""
    mns = config.mns
    return {"visibility_timeout": mns.visibility_timeout,
            "polling_wait_seconds": 0 if dead_letter else mns.wait_seconds,
            "message_retention_period": DLQ_RETENTION if dead_letter else MAIN_RETENTION,
            "delay_seconds": 0}


LABELS = {"visibility_timeout": "VisibilityTimeout", "polling_wait_seconds": "PollingWaitSeconds",
          "message_retention_period": "MessageRetentionPeriod", "delay_seconds": "DelaySeconds"}


def describe(attrs: dict[str, int]) -> str:
    return ", ".join(f"{LABELS[k]}={v}" for k, v in attrs.items())


class QueueAdmin:
    """Attribute reads and changes for one account's queues, through the mns SDK."""

    def __init__(self, endpoint: str, credentials_provider: Any, timeout: float = 15.0) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"[mns] endpoint {endpoint!r}: must start with https://")
        self.endpoint = endpoint.rstrip("/")
        self._provider = credentials_provider
        self._timeout = timeout
        self._account = None

    def _queue(self, name: str):
        if self._account is None:
            from mns.account import Account

            self._account = Account(self.endpoint, credentials_provider=self._provider)
            self._account.get_client().set_connection_timeout(self._timeout)
        return self._account.get_queue(name)

    def attributes(self, name: str) -> dict[str, int] | None:
        """The queue's attributes (those `wanted` sets), or None if it does not exist."""
        from mns.mns_exception import MNSServerException

        try:
            with warnings.catch_warnings():  # the SDK warns about depth fields we do not read
                warnings.simplefilter("ignore", DeprecationWarning)
                meta = self._queue(name).get_attributes()
        except MNSServerException as exc:
            if exc.type == "QueueNotExist":
                return None
            raise classify(exc, f"queue {name!r}", self.endpoint) from None
        except Exception as exc:
            raise classify(exc, f"queue {name!r}", self.endpoint) from None
        return {k: int(getattr(meta, k)) for k in LABELS}

    def create(self, name: str, attrs: dict[str, int]) -> None:
        self._call(name, "create", attrs)

    def set_attributes(self, name: str, attrs: dict[str, int]) -> None:
        self._call(name, "set_attributes", attrs)

    def _call(self, name: str, method: str, attrs: dict[str, int]) -> None:
        from mns.queue import QueueMeta

        meta = QueueMeta(vis_timeout=attrs.get("visibility_timeout"),
                         polling_wait_sec=attrs.get("polling_wait_seconds"),
                         msg_ttl=attrs.get("message_retention_period"),
                         delay_sec=attrs.get("delay_seconds"))
        try:
            getattr(self._queue(name), method)(meta)
        except Exception as exc:
            raise classify(exc, f"queue {name!r}", self.endpoint) from None
