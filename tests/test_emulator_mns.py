"""MNS queue semantics of the emulator, driven through the unmodified `mns` SDK."""
from __future__ import annotations

import base64
import hashlib
import threading
import time

import pytest
from mns.mns_exception import MNSServerException
from mns.queue import Message

from ecs_worker.emulator import default_state
from ecs_worker.testing import mns_queue

# GetQueueAttributes' message counts are marked deprecated in the SDK; the emulator still serves them.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def emulator_state():
    state = default_state()
    state["queues"] = [
        {"name": "ecs-events", "visibility_timeout": 30},
        {"name": "fast", "visibility_timeout": 1},
        {"name": "seeded", "messages": ["first", {"body": "second", "priority": 1}]},
    ]
    return state


def server_error(fn, *args) -> MNSServerException:
    with pytest.raises(MNSServerException) as exc:
        fn(*args)
    return exc.value


def test_send_receive_roundtrip_has_all_attributes(emulator):
    q = mns_queue(emulator, "ecs-events")
    before = int(time.time() * 1000)
    sent = q.send_message(Message('{"name": "Instance:StateChange"}'))
    got = q.receive_message(0)
    assert got.message_id == sent.message_id
    assert got.message_body == '{"name": "Instance:StateChange"}'
    assert got.message_body_md5 == sent.message_body_md5 == hashlib.md5(got.message_body.encode()).hexdigest().upper()
    assert got.dequeue_count == 1
    assert before - 5 <= got.enqueue_time <= got.first_dequeue_time <= before + 5000
    assert 29_000 <= got.next_visible_time - got.first_dequeue_time <= 31_000
    assert got.priority == 8
    assert emulator.state()["queues"]["ecs-events"] == {"visible": 0, "in_flight": 1, "delayed": 0}


def test_bodies_are_stored_as_sent_base64_or_not(emulator):
    enc = mns_queue(emulator, "ecs-events", encoding=True)
    raw = mns_queue(emulator, "ecs-events")
    enc.send_message(Message('{"k": "v"}'))
    got = raw.receive_message(0)
    assert got.message_body == base64.b64encode(b'{"k": "v"}').decode()
    raw.delete_message(got.receipt_handle)
    raw.send_message(Message("tab\there <xml> & \n ünïcode"))
    assert raw.receive_message(0).message_body == "tab\there <xml> & \n ünïcode"


def test_batch_send_and_batch_receive_at_most_16(emulator):
    q = mns_queue(emulator, "ecs-events")
    for _ in range(2):
        q.batch_send_message([Message(f"m{i}") for i in range(10)])
    first = q.batch_receive_message(16, 0)
    second = q.batch_receive_message(16, 0)
    assert len(first) == 16 and len(second) == 4
    assert len({m.message_id for m in first + second}) == 20
    assert all(m.dequeue_count == 1 for m in first)


def test_peek_does_not_consume(emulator):
    q = mns_queue(emulator, "ecs-events")
    assert server_error(q.peek_message).type == "MessageNotExist"
    q.send_message(Message("look"))
    peeked = q.peek_message()
    assert peeked.message_body == "look" and peeked.dequeue_count == 0
    assert len(q.batch_peek_message(5)) == 1
    assert q.receive_message(0).dequeue_count == 1


def test_priority_and_seeded_messages(emulator):
    q = mns_queue(emulator, "seeded")
    assert [m.message_body for m in q.batch_receive_message(16, 0)] == ["second", "first"]


def test_empty_long_poll_waits_then_message_not_exist(emulator):
    q = mns_queue(emulator, "ecs-events")
    t0 = time.monotonic()
    err = server_error(q.receive_message, 1)
    elapsed = time.monotonic() - t0
    assert err.type == "MessageNotExist"
    assert 0.9 <= elapsed < 2.5
    t0 = time.monotonic()
    assert server_error(q.batch_receive_message, 16, 0).type == "MessageNotExist"
    assert time.monotonic() - t0 < 0.5


def test_long_poll_wakes_when_a_message_arrives(emulator):
    q = mns_queue(emulator, "ecs-events")
    timer = threading.Timer(0.3, emulator.send, args=("ecs-events", "late"))
    timer.start()
    try:
        t0 = time.monotonic()
        msgs = q.batch_receive_message(16, 5)
        assert [m.message_body for m in msgs] == ["late"]
        assert 0.2 <= time.monotonic() - t0 < 3.0
    finally:
        timer.cancel()


def test_delayed_message_becomes_visible_during_long_poll(emulator):
    q = mns_queue(emulator, "ecs-events")
    q.send_message(Message("later", delay_seconds=1))
    assert emulator.state()["queues"]["ecs-events"]["delayed"] == 1
    t0 = time.monotonic()
    assert q.receive_message(3).message_body == "later"
    assert 0.8 <= time.monotonic() - t0 < 3.0


def test_visibility_expiry_redelivers_with_dequeue_count_2(emulator):
    q = mns_queue(emulator, "fast")  # visibility_timeout 1 s
    q.send_message(Message("again"))
    first = q.receive_message(0)
    assert server_error(q.receive_message, 0).type == "MessageNotExist"  # hidden
    second = q.receive_message(3)  # long poll wakes when the timeout passes
    assert second.message_id == first.message_id
    assert second.dequeue_count == 2
    assert second.first_dequeue_time == first.first_dequeue_time
    assert second.receipt_handle != first.receipt_handle
    assert server_error(q.delete_message, first.receipt_handle).type == "MessageNotExist"
    q.delete_message(second.receipt_handle)


def test_handle_of_expired_message_is_dead(emulator):
    q = mns_queue(emulator, "fast")
    q.send_message(Message("slow worker"))
    got = q.receive_message(0)
    time.sleep(1.1)
    # MNS: "message not exist" when the handle outlived the visibility timeout
    err = server_error(q.delete_message, got.receipt_handle)
    assert err.type == "MessageNotExist"
    assert emulator.state()["queues"]["fast"]["visible"] == 1


def test_change_visibility_issues_new_handle_and_kills_old(emulator):
    q = mns_queue(emulator, "ecs-events")
    q.send_message(Message("x"))
    got = q.receive_message(0)
    changed = q.change_message_visibility(got.receipt_handle, 60)
    assert changed.receipt_handle != got.receipt_handle
    assert int(changed.next_visible_time) >= int(time.time() * 1000) + 59_000
    assert server_error(q.delete_message, got.receipt_handle).type == "MessageNotExist"
    assert server_error(q.change_message_visibility, got.receipt_handle, 5).type == "MessageNotExist"
    q.delete_message(changed.receipt_handle)
    assert server_error(q.delete_message, changed.receipt_handle).type == "MessageNotExist"


def test_change_visibility_zero_is_invalid_argument(emulator):
    """Documented range 1..43200; the SDK's own check lets 0 through (and stops > 43200)."""
    q = mns_queue(emulator, "ecs-events")
    q.send_message(Message("back"))
    got = q.receive_message(0)
    err = server_error(q.change_message_visibility, got.receipt_handle, 0)
    assert err.type == "InvalidArgument"
    assert "between 1 and 43200" in err.message
    q.delete_message(got.receipt_handle)  # the refused call changed nothing: the handle still works


def test_change_visibility_one_makes_message_visible_a_second_later(emulator):
    q = mns_queue(emulator, "ecs-events")
    q.send_message(Message("back"))
    got = q.receive_message(0)
    q.change_message_visibility(got.receipt_handle, 1)
    again = q.receive_message(3)
    assert again.message_id == got.message_id and again.dequeue_count == 2


def test_batch_delete_partial_failure_lists_errors(emulator):
    q = mns_queue(emulator, "ecs-events")
    q.batch_send_message([Message(f"m{i}") for i in range(3)])
    msgs = q.batch_receive_message(3, 0)
    q.delete_message(msgs[0].receipt_handle)
    err = server_error(q.batch_delete_message, [m.receipt_handle for m in msgs] + ["not-a-handle"])
    assert err.type == "MessageNotExist"
    codes = {e["ReceiptHandle"]: e["ErrorCode"] for e in err.sub_errors}
    assert codes == {msgs[0].receipt_handle: "MessageNotExist", "not-a-handle": "ReceiptHandleError"}
    assert emulator.state()["queues"]["ecs-events"] == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_receipt_handles_with_plus_survive_the_raw_query(emulator):
    q = mns_queue(emulator, "ecs-events")
    for _ in range(16):
        q.batch_send_message([Message("p") for _ in range(16)])
    handles = []
    while True:
        try:
            handles += [m.receipt_handle for m in q.batch_receive_message(16, 0)]
        except MNSServerException:
            break
    assert len(handles) == 256
    for h in handles:  # single deletes put the handle in the query unencoded
        q.delete_message(h)
    assert any("+" in h for h in handles) or any("/" in h for h in handles)


def test_queue_not_exist_and_message_size_limit(emulator):
    missing = mns_queue(emulator, "no-such-queue")
    assert server_error(missing.send_message, Message("x")).type == "QueueNotExist"
    assert server_error(missing.receive_message, 0).type == "QueueNotExist"
    q = mns_queue(emulator, "ecs-events")
    q.send_message(Message("a" * 65536))
    assert server_error(q.send_message, Message("a" * 65537)).type == "InvalidArgument"
    err = server_error(q.batch_send_message, [Message("ok"), Message("b" * 65537)])
    assert err.type == "InvalidArgument"
    assert sorted(err.sub_errors[0]) in (["MessageBodyMD5", "MessageId"], ["ErrorCode", "ErrorMessage"])


def test_queue_attributes_and_inspection(emulator):
    q = mns_queue(emulator, "ecs-events")
    q.batch_send_message([Message("a"), Message("b"), Message("c", delay_seconds=30)])
    q.receive_message(0)
    attrs = q.get_attributes()
    assert attrs.queue_name == "ecs-events" and attrs.visibility_timeout == 30
    assert (attrs.active_messages, attrs.inactive_messages, attrs.delay_messages) == (1, 1, 1)
    state = emulator.get("/_emulator/state")  # over HTTP, unsigned
    assert state["queues"]["ecs-events"] == {"visible": 1, "in_flight": 1, "delayed": 1}
    assert state["calls"]["mns:BatchSendMessage"] == 1
    assert state["calls"]["mns:ReceiveMessage"] == 1
    assert state["calls"]["mns:GetQueueAttributes"] == 1


def test_stop_ends_long_polls_promptly():
    from ecs_worker.testing import run_emulator

    errors = []
    with run_emulator() as emu:
        q = mns_queue(emu, "ecs-events")
        q.send_message(Message("keep-alive connection now open"))

        def poll():
            try:
                mns_queue(emu, "ecs-events").batch_receive_message(16, 30)
                mns_queue(emu, "ecs-events").batch_receive_message(16, 30)
            except Exception as e:  # noqa: BLE001 - any SDK error is fine; hanging is not
                errors.append(e)
        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.2)
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 2.0
    t.join(timeout=5)
    assert not t.is_alive() and errors


def test_documented_ranges_are_enforced(emulator):
    """MNS API reference: waitseconds 0..30, numOfMessages 1..16, DelaySeconds 0..604800,
    Priority 1..16; outside them 400 InvalidArgument (the SDK only checks lower bounds)."""
    q = mns_queue(emulator, "ecs-events")
    for call, args in ((q.receive_message, (31,)), (q.batch_receive_message, (17, 0)),
                       (q.batch_receive_message, (0, 0)), (q.batch_peek_message, (17,)),
                       (q.send_message, (Message("x", delay_seconds=604801),)),
                       (q.send_message, (Message("x", priority=17),))):
        err = server_error(call, *args)
        assert err.type == "InvalidArgument", (call.__name__, args)
    q.send_message(Message("edge", delay_seconds=0, priority=16))
    assert q.batch_receive_message(16, 30)[0].message_body == "edge"
