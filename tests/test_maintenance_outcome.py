"""After the reboot the maintenance plugin reads the event (issue 18, item 4): Avoided settles it;
a reboot that does not avoid it (an emulator event marked `avoidable: false`) leaves the instance in
service, takes it out just before notBefore and back after the platform's reboot, and never reports
success — nor reboots again — while the event stands."""
from __future__ import annotations

import logging
import time

from ecs_worker import RESUME_STATE
from test_maintenance import BEFORE, IID, Worker, instance, memberships, run_emulator, scheduled, world

FAST = {"margin_minutes": 0, "outcome_seconds": 3, "takeout_seconds": 4}


def unavoidable(not_before: float) -> dict:
    state = world(not_before)
    state["instances"][0]["scheduled_events"][0]["avoidable"] = False
    return state


def step(result) -> str | None:
    return ((result.resume().get(RESUME_STATE) or {}).get("maintenance") or {}).get("step")


def test_a_reboot_that_does_not_avoid_the_event_guards_notbefore_and_never_claims_success(caplog):
    nb = time.time() + 11
    with run_emulator(unavoidable(nb)) as emu, Worker(emu, **FAST) as w:
        seen = []

        def watch(result):
            seen.append((step(result), time.time(), memberships(emu), instance(emu)["scheduled_events"][0]["status"],
                         result.outcome))

        with caplog.at_level(logging.WARNING):
            results = w.run_through(scheduled(nb), rounds=60, on_defer=watch)
        final = results[-1]
        assert final.outcome == "handled", final.error
        assert "the platform rebooted" in final.plugins["maintenance"].detail
        assert all(r.outcome == "deferred" for r in results[:-1])  # never handled while the event stood
        events = instance(emu)["scheduled_events"][0]
        assert events["status"] == "Executed"
        assert emu.state()["calls"].get("ecs:RebootInstance") == 1  # ours, once; the platform did the second
        assert memberships(emu) == BEFORE
        assert "the reboot did not avoid the event" in caplog.text
        # after our reboot it was back in service; from takeout until the event ended it was out
        back_in = [s for s in seen if s[0] in ("verify", "guard")]
        assert {s[0] for s in back_in} == {"verify", "guard"} and all(s[2] == BEFORE for s in back_in)
        assert all(s[3] == "Scheduled" for s in back_in)
        out = [s for s in seen if s[0] == "out"]
        assert out and all(s[2] == ({("i-other", 80): 100}, {}, {}) for s in out)
        assert min(s[1] for s in out) >= int(nb) - FAST["takeout_seconds"]  # notBefore has whole seconds


def test_an_avoided_event_settles_once_it_is_seen_avoided():
    nb = time.time() + 3600
    with run_emulator(world(nb)) as emu, Worker(emu, **FAST) as w:
        results = w.run_through(scheduled(nb))
        assert results[-1].outcome == "handled"
        assert "the event is Avoided" in results[-1].plugins["maintenance"].detail
        calls = emu.state()["calls"]
        assert calls.get("ecs:DescribeInstanceHistoryEvents", 0) >= 2  # before acting, and after


def test_no_second_reboot_for_the_same_event_within_12_hours():
    nb = time.time() + 3600
    with run_emulator(unavoidable(nb)) as emu, Worker(emu, **{**FAST, "takeout_seconds": 60}) as w:
        result, resume = None, None
        for _ in range(30):
            result = w.dispatch(scheduled(nb), resume)
            if step(result) == "guard":
                break
            time.sleep(min(result.defer_seconds or 0, 1.0))
            resume = result.resume(resume)
        assert step(result) == "guard" and result.outcome == "deferred"  # waits for notBefore
        # A new notification of the same event (no resume state): no second reboot, the same guard.
        again = w.dispatch(scheduled(nb, event_id="evt-2"))
        assert again.outcome == "deferred" and step(again) == "guard"
        assert emu.state()["calls"].get("ecs:RebootInstance") == 1
