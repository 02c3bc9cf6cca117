"""The example plugin's own tests, written with the ecs-worker test kit (`ecs_worker.testing`)."""
from ecs_worker.testing import body, interruption, maintenance, state_change
from ecs_worker_hello import HelloPlugin


def test_notes_maintenance_events(harness):
    plugin = HelloPlugin()  # a fresh registration: its own state
    h = harness(plugin)
    result = h.dispatch(maintenance("i-bp1hello0000000001"))
    assert result.outcome == "handled"
    assert result.plugins["hello"].detail == "noted"  # the name the worker's logs use
    assert plugin.seen == ["i-bp1hello0000000001"]


def test_lets_other_events_pass_and_says_why(harness):
    h = harness(HelloPlugin())
    result = h.dispatch(state_change("i-bp1hello0000000002", "Stopped"))
    assert result.outcome == "ignored" and result.plugins["hello"].detail == "greets maintenance events only"
    assert h.dispatch(interruption("i-bp1hello0000000003", envelope="eventbridge")).outcome == "ignored"


def test_factories_build_real_envelopes():
    ev = interruption("i-x", envelope="eventbridge")
    assert ev.source_format == "eventbridge" and ev.action == "delete"
    assert "ecs:Instance:PreemptibleInstanceInterruption" in body(ev)


def test_is_installed_as_an_entry_point_plugin():
    import subprocess
    import sys

    listing = subprocess.run([sys.executable, "-m", "ecs_worker", "plugins"], capture_output=True,
                             text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    hello = next(line for line in listing.stdout.splitlines() if line.startswith("hello "))
    assert "entry point" in hello and "on_event" in hello
