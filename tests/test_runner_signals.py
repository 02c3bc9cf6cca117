"""Signals against a real worker: SIGHUP reloads (a bad file changes nothing), SIGUSR1
logs the status, stray signals are ignored; none of them stops the worker, which keeps
handling events, and only SIGTERM ends it (exit 0)."""
from __future__ import annotations

import json
import signal
import time

import pytest

from runner_kit import QUEUE, Setup, Worker, emulator_state as short_visibility, event_body, wait_until

# Records each event with the `tag` of its [plugins.tagger] section, read at each call.
TAGGER = '''
import os
from ecs_worker import hookimpl

@hookimpl
def on_event(event, ctx):
    fd = os.open({record!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{{event.id}} {{ctx.config.get('tag')}}\\n".encode())
    os.close(fd)
'''


@pytest.fixture
def emulator_state():
    return short_visibility(visibility_timeout=5)


def test_sighup_reloads_stray_signals_are_ignored_and_only_sigterm_stops(emulator, tmp_path):
    setup = Setup(tmp_path, emulator)
    record = tmp_path / "tags.log"
    tagger = tmp_path / "tagger.py"
    tagger.write_text(TAGGER.format(record=str(record)))
    config = setup.config(plugins__load=[str(tagger)])
    base = config.read_text()
    config.write_text(base + '[plugins.tagger]\ntag = "one"\n')
    worker = Worker(config)

    def tags() -> dict[str, str]:
        lines = record.read_text().splitlines() if record.exists() else []
        return dict(line.split(" ", 1) for line in lines)

    def handled(event_id: str, tag: str) -> None:
        emulator.send(QUEUE, event_body(event_id))
        wait_until(lambda: event_id in tags(), 15, message=f"{event_id} handled")
        assert tags()[event_id] == tag, worker.output()[-2000:]

    try:
        handled("before", "one")
        debug = setup.config(plugins__load=[str(tagger)], logging__level="DEBUG").read_text()
        config.write_text(debug + '[plugins.tagger]\ntag = "two"\n')
        worker.signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP: reloaded" in worker.output(), 10, message="the reload logged")
        handled("after-reload", "two")
        # [logging] applied: DEBUG lines follow (the plugin's record can be written before them)
        wait_until(lambda: "DEBUG" in worker.output().split("SIGHUP: reloaded", 1)[1], 10,
                   message="DEBUG lines after the reload")
        config.write_text(base.replace("[worker]\n", "[worker]\nno_such_key = 1\n"))  # invalid: nothing changes
        worker.signal(signal.SIGHUP)
        wait_until(lambda: "config not reloaded" in worker.output(), 10, message="the refusal logged")
        assert "no_such_key" in worker.output()
        handled("after-bad-reload", "two")
        worker.signal(signal.SIGUSR1)
        wait_until(lambda: "status (SIGUSR1): handled" in worker.output(), 10, message="the status line")
        for sig in (signal.SIGUSR2, signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO):
            worker.signal(sig)
            time.sleep(0.05)
        wait_until(lambda: worker.output().count("ignored signal") == 5, 10, message="stray signals logged")
        handled("after-strays", "two")
        assert worker.alive()
        worker.signal(signal.SIGTERM)
        assert worker.wait(20) == 0, worker.output()[-2000:]
    finally:
        worker.stop()
    assert "Traceback" not in worker.output()
