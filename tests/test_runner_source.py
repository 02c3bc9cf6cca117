"""The MNS source against the emulator with the real SDK: batches, handles, error classes."""
from __future__ import annotations

import pytest

from ecs_worker.cloud.credentials import Credentials, StaticProvider
from ecs_worker.queue.source import MnsError, MnsQueue
from runner_kit import DLQ, QUEUE, event_body


def _queue(emulator, name=QUEUE, secret=None) -> MnsQueue:
    creds = Credentials(emulator.access_key_id, secret or emulator.access_key_secret)
    return MnsQueue(emulator.mns_endpoint, name, StaticProvider(creds), wait_seconds=1)


def test_receive_gives_raw_bytes_and_delete_batch_reports_stale_handles_per_message(emulator):
    source = _queue(emulator)
    plain, wrapped = event_body("e-1"), "eyJpZCI6ICJlLTIifQ=="  # base64 stays base64: we detect
    emulator.send(QUEUE, plain)
    emulator.send(QUEUE, wrapped)
    got = source.receive(16, 1)
    assert sorted(m.body for m in got) == sorted([plain.encode(), wrapped.encode()])
    assert all(m.dequeue_count == 1 and m.enqueue_time_ms > 0 for m in got)
    first, second = got
    newer = source.change_visibility(first.receipt_handle, 30)
    assert newer != first.receipt_handle
    failed = source.delete_batch([first.receipt_handle, second.receipt_handle])  # first is stale now
    assert list(failed) == [first.receipt_handle] and failed[first.receipt_handle].stale_handle
    assert source.delete_batch([newer]) == {}
    assert source.receive(16, 1) == []  # an empty long poll is no error


def test_throttling_and_server_errors_are_transient_and_configuration_errors_permanent(emulator):
    source = _queue(emulator)
    emulator.set_faults({"mns": {"throttle_rps": 0.01, "throttle_burst": 1}})
    source.receive(1, 1)  # the one token
    with pytest.raises(MnsError) as throttled:
        source.receive(1, 1)
    assert throttled.value.code == "TooManyRequests" and not throttled.value.permanent
    emulator.set_faults({"mns": {"error_rate": 1.0}})
    with pytest.raises(MnsError) as failing:
        source.receive(1, 1)
    assert failing.value.code == "InternalError" and not failing.value.permanent
    emulator.set_faults({"mns": {}})
    with pytest.raises(MnsError) as missing:
        _queue(emulator, "nope").visibility_timeout()
    assert missing.value.permanent and "QueueNotExist" in str(missing.value)
    with pytest.raises(MnsError) as forged:
        _queue(emulator, secret="not-the-secret").receive(1, 1)
    assert forged.value.permanent and "not-the-secret" not in str(forged.value)


def test_unreachable_endpoint_is_a_transient_network_error(emulator):
    source = MnsQueue("http://127.0.0.1:9", QUEUE, StaticProvider(Credentials("a", "b")), 1)
    with pytest.raises(MnsError) as down:
        source.receive(1, 1)
    assert not down.value.permanent and "network error" in str(down.value)


def test_send_to_the_dead_letter_queue_keeps_the_body_verbatim(emulator):
    from ecs_worker.queue.dead_letters import dead_letter_body

    _queue(emulator, DLQ).send(dead_letter_body({"body": "not json <&>", "reason": "invalid"}))
    (m,) = _queue(emulator, DLQ).receive(1, 1)
    assert b'"body": "not json <&>"' in m.body
