"""The contract's completion step for lifecycle-hook events (completion.py), without any cloud:
it runs once every `on_lifecycle_hook` implementation has answered — futures resolved — sees
their combined result, and its own answer joins the outcome like any hook's."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future

from ecs_worker import hookimpl
from ecs_worker.events.event import parse_event
from ecs_worker.testing import Harness

BODY = json.dumps({"product": "ESS", "regionId": "cn-hangzhou", "content": {
    "scalingGroupId": "asg-1", "scalingActivityId": "asa-1", "lifecycleHookId": "ash-1",
    "lifecycleActionToken": "T-1", "lifecycleTransition": "SCALE_IN", "instanceIds": ["i-1"]}})


class Completer:
    name = "completer"

    def __init__(self, answer=lambda result, ctx: "completed") -> None:
        self.answer, self.seen = answer, []

    @hookimpl
    def complete_lifecycle_action(self, event, result, ctx):
        self.seen.append((time.monotonic(), result.outcome, {n: r.status for n, r in result.plugins.items()}))
        return self.answer(result, ctx)


class Later:
    """Answers through a future resolved `seconds` later, on a thread of its own."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.resolved = seconds, None

    @hookimpl
    def on_lifecycle_hook(self, event, ctx):
        fut: Future = Future()

        def resolve() -> None:
            time.sleep(self.seconds)
            self.resolved = time.monotonic()
            fut.set_result("deregistered")
        threading.Thread(target=resolve, daemon=True).start()
        return fut


def harness(completer, *others):
    h = Harness(completer, config={}, dry_run=True, call_timeout=5)
    for n, other in enumerate(others):
        h.plugins.register(other, f"other{n}", "test")
    return h


def test_the_completion_step_runs_after_every_plugins_future_with_their_result():
    completer, later = Completer(), Later(0.3)
    with harness(completer, later) as h:
        result = h.dispatch(parse_event(BODY))
    ((when, outcome, statuses),) = completer.seen
    assert when >= later.resolved and outcome == "handled" and statuses == {"other0": "handled"}
    assert result.outcome == "handled" and result.plugins["completer"].detail == "completed"


def test_its_failure_or_deferral_joins_the_outcome_and_it_returns_with_the_message():
    def defer_once(result, ctx):
        if ctx.deferred_since is None:
            ctx.defer(0.1, "holding", state={"n": 1})
            return "holding"
        return f"done after {ctx.resume_state['n']} hold"

    completer = Completer(defer_once)
    with harness(completer) as h:
        first = h.dispatch(parse_event(BODY))
        assert first.outcome == "deferred" and first.resume()["~state"] == {"completer": {"n": 1}}
        second = h.dispatch(parse_event(BODY), first.resume())
    assert second.outcome == "handled" and second.plugins["completer"].detail == "done after 1 hold"

    def boom(result, ctx):
        raise RuntimeError("ESS said no")
    with harness(Completer(boom)) as h:
        failed = h.dispatch(parse_event(BODY))
    assert failed.outcome == "failed" and "ESS said no" in failed.error


def test_other_events_have_no_completion_step():
    completer = Completer()
    other = json.dumps({"product": "ECS", "name": "Instance:StateChange", "id": "e-1",
                        "content": {"resourceId": "i-1", "state": "Stopped"}})
    with harness(completer) as h:
        h.dispatch(parse_event(other))
    assert completer.seen == []
