"""O&M notifications in the contract: `Event.event_type` / `event_status` / `not_before`,
the `on_system_event` hook, and plugin state carried across a deferral or a failure."""
from __future__ import annotations

import json
import types
from datetime import datetime, timezone

import pytest

from ecs_worker import hookimpl
from ecs_worker import RESUME_STATE
from ecs_worker.events.event import parse_event
from ecs_worker.testing import Harness, interruption, maintenance, state_change


@pytest.mark.parametrize("envelope", ["cloudmonitor", "eventbridge"])
def test_maintenance_notification_fields(envelope):
    ev = maintenance("i-bp1m1", not_before="2026-11-29T18:00:00Z", envelope=envelope)
    assert ev.is_system_event
    assert ev.event_type == "SystemMaintenance.Reboot"
    assert ev.event_status == "Scheduled"
    assert ev.not_before == datetime(2026, 11, 29, 18, 0, tzinfo=timezone.utc)
    assert ev.content["eventId"] == "e-i-bp1m1"
    assert ev.summary()["event_type"] == "SystemMaintenance.Reboot"


def test_other_events_have_none():
    for ev in (state_change("i-1", "Stopped"), interruption("i-1")):
        assert (ev.event_type, ev.event_status, ev.not_before) == (None, None, None)
        assert not ev.is_system_event
        assert "event_type" not in ev.summary()


def _body(name, content):
    return json.dumps({"id": "x", "name": name, "regionId": "cn-hangzhou", "content": content})


def test_name_fills_what_content_leaves_out_and_content_wins():
    ev = parse_event(_body("Instance:SystemMaintenance.Reboot:Avoided", {"instanceId": "i-1"}))
    assert (ev.event_type, ev.event_status, ev.not_before) == ("SystemMaintenance.Reboot", "Avoided", None)
    ev = parse_event(_body("Instance:SystemMaintenance.Reboot",
                           {"instanceId": "i-1", "eventType": "SystemMaintenance.Reboot",
                            "eventStatus": "Executing", "notBefore": "2026-11-29T18:00:00+08:00"}))
    assert ev.event_status == "Executing"
    assert ev.not_before.utcoffset().total_seconds() == 8 * 3600


def test_a_bad_not_before_leaves_it_unknown_rather_than_losing_the_event():
    ev = parse_event(_body("Instance:SystemMaintenance.Reboot:Scheduled",
                           {"instanceId": "i-1", "notBefore": "next tuesday"}))
    assert ev.is_system_event and ev.not_before is None


def test_non_instance_and_unknown_names_are_not_system_events():
    assert not parse_event(_body("Disk:Stalled:Executing", {"diskId": "d-1"})).is_system_event
    assert not parse_event(_body("Instance:Whatever", {"instanceId": "i-1"})).is_system_event


def _plugin(**hooks):
    module = types.ModuleType("probe")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


def test_on_system_event_is_called_for_om_notifications_only():
    seen = []
    plugin = _plugin(on_system_event=lambda event, ctx: seen.append(("system", event.event_status)) or "ok",
                     on_state_change=lambda event, ctx: seen.append(("state", event.state)) or "ok")
    with Harness(plugin, name="probe") as h:
        assert h.dispatch(maintenance("i-1")).outcome == "handled"
        assert h.dispatch(state_change("i-1", "Stopped")).outcome == "handled"
        assert h.dispatch(interruption("i-1")).outcome == "ignored"
    assert seen == [("system", "Scheduled"), ("state", "Stopped")]


def test_state_travels_with_a_deferral_and_ends_when_handled():
    calls = []

    def on_system_event(event, ctx):
        calls.append(ctx.resume_state)
        step = (ctx.resume_state or {}).get("step", 0)
        if step < 2:
            ctx.defer(5, "next step", state={"step": step + 1, "seen": [step]})
            return "step"
        return "done"

    with Harness(_plugin(on_system_event=on_system_event), name="probe") as h:
        ev = maintenance("i-1")
        first = h.dispatch(ev)
        assert first.outcome == "deferred"
        resume = first.resume()
        assert resume[RESUME_STATE] == {"probe": {"step": 1, "seen": [0]}}
        json.dumps(resume)  # the store and a re-sent message keep it as JSON
        second = h.dispatch(ev, resume=json.loads(json.dumps(resume)))
        third = h.dispatch(ev, resume=second.resume(resume))
        assert third.outcome == "handled"
        assert third.resume() == {}
    assert calls == [None, {"step": 1, "seen": [0]}, {"step": 2, "seen": [1]}]


def test_state_travels_with_a_failure_too():
    def on_system_event(event, ctx):
        if ctx.resume_state is None:
            ctx.save_state({"owed": ["rsp-1/i-1:80"]})
            raise RuntimeError("restore failed")
        return f"restored {ctx.resume_state['owed'][0]}"

    with Harness(_plugin(on_system_event=on_system_event), name="probe") as h:
        failed = h.dispatch(maintenance("i-1"))
        assert failed.outcome == "failed"
        again = h.dispatch(maintenance("i-1"), resume=failed.resume())
        assert again.outcome == "handled"
        assert again.plugins["probe"].detail == "restored rsp-1/i-1:80"


@pytest.mark.parametrize("state", [{"blob": "x" * 9000}, {"when": datetime.now()}, {"nan": float("nan")}])
def test_state_that_cannot_travel_is_refused(state):
    def on_system_event(event, ctx):
        ctx.defer(5, state=state)

    with Harness(_plugin(on_system_event=on_system_event), name="probe") as h:
        result = h.dispatch(maintenance("i-1"))
    assert result.outcome == "failed"
    assert "state" in result.error
