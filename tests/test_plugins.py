"""The plugin manager and dispatch: loading, blocking, validation, isolation, outcomes."""
import logging
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from ecs_worker import parse_event
from ecs_worker.config import ConfigError, parse_config
from ecs_worker.plugin_host.context import Runtime
from ecs_worker.plugin_host.dispatch import Dispatcher, PluginStartupError
from ecs_worker.plugin_host.manager import DEFAULT_PLUGINS, PluginError, builtin_name, load_plugins

STOPPED = parse_event('{"id": "e1", "name": "Instance:StateChange", '
                      '"content": {"resourceId": "i-1", "state": "Stopped"}}')
MAINTENANCE = parse_event('{"id": "e2", "name": "Instance:SystemMaintenance.Reboot:Scheduled", '
                          '"content": {"instanceId": "i-2"}}')


def plugin_file(tmp_path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text("from ecs_worker import hookimpl\n" + textwrap.dedent(body))
    return str(path)


# Only `log` of the built-ins: the others act on events and would change the outcomes here.
QUIET = ("hello", "restart", "slb", "maintenance", "webhook")


def make(tmp_path=None, load=(), disabled=QUIET, call_timeout=5.0, **sections):
    config = parse_config({"plugins": {"load": list(load), "disabled": list(disabled),
                                       "call_timeout": call_timeout, **sections}})
    plugins = load_plugins(config)
    runtime = Runtime(config, plugins.configs, dry_run=True)
    return plugins, Dispatcher(plugins.pm, runtime, call_timeout)


def test_builtins_are_registered_like_any_plugin():
    plugins, _ = make(disabled=["hello"])
    names = {i.name: i for i in plugins.info()}
    for spec in DEFAULT_PLUGINS:
        name = builtin_name(spec)
        assert names[name].origin == "builtin"
    assert "on_settled" in names["log"].hooks


def test_entry_point_plugin_from_installed_example_package():
    plugins, dispatcher = make(disabled=[d for d in QUIET if d != "hello"])
    info = {i.name: i for i in plugins.info()}
    assert info["hello"].origin.startswith("entry point") and info["hello"].hooks == ("on_event",)
    assert dispatcher.dispatch(MAINTENANCE).outcome == "handled"
    assert dispatcher.dispatch(STOPPED).outcome == "ignored"


def test_file_path_plugin_and_module_plugin(tmp_path):
    path = plugin_file(tmp_path, "mine", """
        @hookimpl
        def on_state_change(event, ctx):
            return f"saw {event.state}"
    """)
    plugins, dispatcher = make(load=[path, "ecs_worker_hello"])
    origins = {i.name: i.origin for i in plugins.info()}
    assert origins["mine"] == "config" and origins["ecs_worker_hello"] == "config"
    result = dispatcher.dispatch(STOPPED)
    assert result.outcome == "handled" and result.plugins["mine"].detail == "saw Stopped"


def test_disabled_blocks_builtins_and_third_party(tmp_path):
    path = plugin_file(tmp_path, "mine", "@hookimpl\ndef on_event(event, ctx):\n    return 'x'\n")
    plugins, _ = make(load=[path], disabled=["log", "mine", *QUIET])
    names = {name for name, _ in plugins.pm.list_name_plugin()}
    assert not names & {"log", "hello", "mine"}


def test_misspelled_hook_fails_loudly_naming_plugin_and_file(tmp_path):
    path = plugin_file(tmp_path, "typo", """
        @hookimpl
        def on_stat_change(event, ctx):
            pass
    """)
    with pytest.raises(PluginError) as info:
        make(load=[path])
    assert "typo" in str(info.value) and path in str(info.value) and "on_stat_change" in str(info.value)


def test_wrong_hook_arguments_fail_naming_plugin(tmp_path):
    path = plugin_file(tmp_path, "badargs", "@hookimpl\ndef on_event(evt, ctx):\n    pass\n")
    with pytest.raises(PluginError, match="badargs"):
        make(load=[path])


def test_plugin_import_error_names_plugin_and_file_line(tmp_path):
    path = plugin_file(tmp_path, "broken", "import nonexistent_module_xyz\n")
    with pytest.raises(PluginError) as info:
        make(load=[path])
    assert "broken" in str(info.value) and "nonexistent_module_xyz" in str(info.value)
    syntax = plugin_file(tmp_path, "syntax", "def on_event(:\n")
    with pytest.raises(PluginError, match=r"syntax\.py:\d"):
        make(load=[syntax])


@pytest.mark.parametrize("raising", ["raise SystemExit(3)", "raise KeyboardInterrupt", "import sys; sys.exit()"])
def test_a_plugin_that_exits_at_import_is_a_plugin_error_exit_2(tmp_path, raising):
    path = plugin_file(tmp_path, "exits", raising + "\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[plugins]\nload = ["{path}"]\n')
    for command in ("plugins", "check-config"):
        proc = subprocess.run([sys.executable, "-m", "ecs_worker", command, "-c", str(cfg)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (command, proc.returncode, proc.stderr)
        assert "exits" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_cli_reports_plugin_error_as_exit_2(tmp_path):
    path = plugin_file(tmp_path, "typo", "@hookimpl\ndef on_evnt(event, ctx):\n    pass\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[plugins]\nload = ["{path}"]\n')
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", "plugins", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "typo" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_plugins_command_lists_origin_and_hooks():
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", "plugins"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "hello" in proc.stdout and "entry point" in proc.stdout and "on_settled" in proc.stdout


def test_one_plugin_crashing_never_stops_another(tmp_path):
    crash = plugin_file(tmp_path, "crash", """
        @hookimpl(tryfirst=True)
        def on_state_change(event, ctx):
            raise RuntimeError("boom")
    """)
    calm = plugin_file(tmp_path, "calm", """
        calls = []
        @hookimpl
        def on_state_change(event, ctx):
            calls.append(event.id)
            return "done"
    """)
    plugins, dispatcher = make(load=[crash, calm])
    result = dispatcher.dispatch(STOPPED)
    assert plugins.pm.get_plugin("calm").calls == ["e1"]
    assert result.outcome == "failed" and result.error == "crash: RuntimeError: boom"
    assert result.plugins["calm"].status == "handled"
    assert set(result.retry_plugins) == {"crash"}


def test_hung_plugin_times_out_as_failure_and_others_finish(tmp_path):
    hang = plugin_file(tmp_path, "hang", """
        import time
        @hookimpl
        def on_event(event, ctx):
            time.sleep(3)
    """)
    ok = plugin_file(tmp_path, "ok", "@hookimpl\ndef on_event(event, ctx):\n    return 'ok'\n")
    _, dispatcher = make(load=[hang, ok], call_timeout=0.3)
    started = time.monotonic()
    result = dispatcher.dispatch(MAINTENANCE)
    assert time.monotonic() - started < 2
    assert result.outcome == "failed" and "timed out after 0.3s" in result.error
    assert result.plugins["ok"].status == "handled"


def test_deferral_outcome_and_resume_only_calls_the_deferring_plugin(tmp_path):
    path = plugin_file(tmp_path, "later", """
        @hookimpl
        def on_state_change(event, ctx):
            if ctx.deferred_since is None:
                ctx.defer(60, "grace")
                return None
            return "acted"
    """)
    counter = plugin_file(tmp_path, "counter", """
        seen = []
        @hookimpl
        def on_event(event, ctx):
            seen.append(event.id)
            return "counted"
    """)
    plugins, dispatcher = make(load=[path, counter])
    first = dispatcher.dispatch(STOPPED)
    assert first.outcome == "deferred" and first.defer_seconds == 60
    assert list(first.retry_plugins) == ["later"]
    second = dispatcher.dispatch(STOPPED, first.retry_plugins)
    assert second.outcome == "handled" and second.plugins["later"].detail == "acted"
    assert plugins.pm.get_plugin("counter").seen == ["e1"]  # not called again


def test_future_results_settle_without_blocking_the_caller(tmp_path):
    path = plugin_file(tmp_path, "async_", """
        from concurrent.futures import Future
        pending = []
        @hookimpl
        def on_event(event, ctx):
            fut = Future()
            pending.append(fut)
            return fut
    """)
    plugins, dispatcher = make(load=[path])
    done = dispatcher.start(MAINTENANCE)
    assert not done.done()
    fut: Future = plugins.pm.get_plugin("async_").pending[0]
    threading.Timer(0.05, fut.set_result, ["removed"]).start()
    assert done.result(timeout=5).outcome == "handled"
    failing = dispatcher.start(MAINTENANCE)
    plugins.pm.get_plugin("async_").pending[1].set_exception(RuntimeError("slb said no"))
    result = failing.result(timeout=5)
    assert result.outcome == "failed" and "slb said no" in result.error


def test_dry_run_gateway_plans_and_records(tmp_path):
    path = plugin_file(tmp_path, "actor", """
        called = []
        @hookimpl
        def on_state_change(event, ctx):
            ctx.act("StartInstance", event.instance_id, called.append, event.instance_id)
            return "started"
    """)
    plugins, dispatcher = make(load=[path])
    result = dispatcher.dispatch(STOPPED)
    assert plugins.pm.get_plugin("actor").called == []
    assert [(a.plugin, a.action, a.target, a.dry_run, a.result) for a in result.actions] == [
        ("actor", "StartInstance", "i-1", True, "planned")]


def test_startup_failure_names_the_plugin(tmp_path):
    path = plugin_file(tmp_path, "needy", "@hookimpl\ndef on_startup(ctx):\n    raise ValueError('no token')\n")
    _, dispatcher = make(load=[path])
    with pytest.raises(Exception, match="plugin 'needy' failed to start: ValueError: no token"):
        dispatcher.startup()


def test_a_future_that_never_resolves_fails_after_the_call_timeout(tmp_path):
    path = plugin_file(tmp_path, "forgetful", """
        from concurrent.futures import Future
        @hookimpl
        def on_event(event, ctx):
            return Future()  # never resolved: a bug in the plugin
    """)
    _, dispatcher = make(load=[path], call_timeout=0.3)
    started = time.monotonic()
    result = dispatcher.start(MAINTENANCE).result(timeout=5)
    assert 0.25 < time.monotonic() - started < 3
    assert result.outcome == "failed" and "pending work timed out after 0.3s" in result.error


# -- isolation: whatever a plugin does wrong costs only that plugin ---------------------------

BASE_EXCEPTIONS = {
    "SystemExit": "raise SystemExit(3)",
    "KeyboardInterrupt": "raise KeyboardInterrupt()",
    "GeneratorExit": "raise GeneratorExit()",
    "custom BaseException": "class Doom(BaseException):\n        pass\n    raise Doom('the end')",
    "hostile __str__": ("class Ugly(Exception):\n        def __str__(self):\n            raise SystemExit\n"
                        "    raise Ugly()"),
}


def _raiser(tmp_path, hook: str, statement: str, name: str = "rogue", args: str = "event, ctx") -> str:
    return plugin_file(tmp_path, name, f"@hookimpl(tryfirst=True)\ndef {hook}({args}):\n    {statement}\n")


@pytest.mark.parametrize("call_timeout", [0, 5.0], ids=["inline", "lane"])
@pytest.mark.parametrize("statement", BASE_EXCEPTIONS.values(), ids=BASE_EXCEPTIONS.keys())
def test_any_base_exception_in_an_event_hook_is_that_plugins_failure(tmp_path, statement, call_timeout):
    rogue = _raiser(tmp_path, "on_state_change", statement)
    calm = plugin_file(tmp_path, "calm", "@hookimpl\ndef on_state_change(event, ctx):\n    return 'done'\n")
    _, dispatcher = make(load=[rogue, calm], call_timeout=call_timeout)
    try:
        result = dispatcher.dispatch(STOPPED)
    finally:
        dispatcher.shutdown()
    assert result.outcome == "failed" and result.plugins["rogue"].status == "failed"
    assert result.plugins["calm"].status == "handled"
    assert result.error.startswith("rogue: ") and "\n" not in result.error


@pytest.mark.parametrize("call_timeout", [0, 5.0], ids=["inline", "lane"])
@pytest.mark.parametrize("statement", BASE_EXCEPTIONS.values(), ids=BASE_EXCEPTIONS.keys())
def test_any_base_exception_in_on_settled_changes_nothing(tmp_path, statement, call_timeout, caplog):
    rogue = _raiser(tmp_path, "on_settled", statement, args="event, result, ctx")
    seen = plugin_file(tmp_path, "seen", """
        outcomes = []
        @hookimpl
        def on_settled(event, result, ctx):
            outcomes.append(result.outcome)
    """)
    plugins, dispatcher = make(load=[rogue, seen], call_timeout=call_timeout)
    with caplog.at_level(logging.ERROR, "ecs_worker.dispatch"):
        for _ in range(3):
            dispatcher.run_on_settled(STOPPED, dispatcher.dispatch(STOPPED))
        dispatcher.shutdown()  # lets the observers catch up first
    assert plugins.pm.get_plugin("seen").outcomes == ["ignored"] * 3
    assert caplog.text.count("plugin rogue failed in on_settled") == 3


@pytest.mark.parametrize("statement", BASE_EXCEPTIONS.values(), ids=BASE_EXCEPTIONS.keys())
def test_any_base_exception_in_on_startup_is_a_startup_error(tmp_path, statement):
    rogue = _raiser(tmp_path, "on_startup", statement, args="ctx")
    _, dispatcher = make(load=[rogue])
    with pytest.raises(PluginStartupError, match="plugin 'rogue' failed to start: "):
        dispatcher.startup()
    dispatcher.shutdown()


def test_base_exception_in_on_startup_exits_2_with_one_line(tmp_path):
    rogue = _raiser(tmp_path, "on_startup", "raise SystemExit('bye')", args="ctx")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[plugins]\nload = ["{rogue}"]\ndisabled = ["restart", "slb", "webhook"]\n')
    event = tmp_path / "e.json"
    event.write_text('{"id": "e1", "name": "x"}')
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", "replay", "-c", str(cfg), str(event)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "ecs-worker: error: plugin 'rogue' failed to start: SystemExit: bye"


def test_a_hung_on_startup_fails_after_the_call_timeout(tmp_path):
    hang = _raiser(tmp_path, "on_startup", "import threading; threading.Event().wait()", args="ctx")
    _, dispatcher = make(load=[hang], call_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(PluginStartupError, match="on_startup timed out after 0.3s"):
        dispatcher.startup()
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("statement", BASE_EXCEPTIONS.values(), ids=BASE_EXCEPTIONS.keys())
def test_any_base_exception_in_on_shutdown_is_logged_and_the_rest_shut_down(tmp_path, statement, caplog):
    rogue = _raiser(tmp_path, "on_shutdown", statement, args="ctx")
    tidy = plugin_file(tmp_path, "tidy", "closed = []\n@hookimpl\ndef on_shutdown(ctx):\n    closed.append(1)\n")
    plugins, dispatcher = make(load=[rogue, tidy])
    with caplog.at_level(logging.ERROR, "ecs_worker.dispatch"):
        dispatcher.shutdown()
    assert plugins.pm.get_plugin("tidy").closed == [1]
    assert "plugin rogue failed to shut down" in caplog.text


@pytest.mark.parametrize("outcome", ["SystemExit(2)", "KeyboardInterrupt()", "cancel"])
def test_a_returned_future_ending_in_a_base_exception_is_a_failure(tmp_path, outcome):
    path = plugin_file(tmp_path, "async_", """
        from concurrent.futures import Future
        pending = []
        @hookimpl
        def on_event(event, ctx):
            fut = Future()
            pending.append(fut)
            return fut
    """)
    plugins, dispatcher = make(load=[path], call_timeout=0)  # no deadline to fall back on
    done = dispatcher.start(MAINTENANCE)
    fut = plugins.pm.get_plugin("async_").pending[0]
    if outcome == "cancel":
        fut.cancel()
    else:
        fut.set_exception(eval(outcome))
    result = done.result(timeout=5)
    assert result.outcome == "failed" and result.error.startswith("async_: ")


def test_plugins_cannot_change_the_event_for_the_next_plugin(tmp_path):
    meddler = plugin_file(tmp_path, "meddler", """
        @hookimpl(tryfirst=True)
        def on_state_change(event, ctx):
            event.content["state"] = "Running"
    """)
    sneaky = plugin_file(tmp_path, "sneaky", """
        import copy
        @hookimpl(tryfirst=True)
        def on_state_change(event, ctx):
            mine = copy.deepcopy(event.raw)  # a private copy is theirs to change
            mine["content"]["state"] = "Running"
            return "copied"
    """)
    reader = plugin_file(tmp_path, "reader", """
        seen = []
        @hookimpl(trylast=True)
        def on_state_change(event, ctx):
            seen.append((event.state, event.content["state"], event.raw["content"]["state"]))
            return "read"
    """)
    plugins, dispatcher = make(load=[meddler, sneaky, reader])
    result = dispatcher.dispatch(STOPPED)
    assert "read-only" in result.plugins["meddler"].detail
    assert result.plugins["sneaky"].status == "handled"
    assert plugins.pm.get_plugin("reader").seen == [("Stopped", "Stopped", "Stopped")]


# -- hung plugins: each plugin's calls have their own threads ---------------------------------

HANG_ON_STOPPED = """
    import threading
    forever = threading.Event()
    @hookimpl
    def on_state_change(event, ctx):
        forever.wait()
"""
QUICK = "@hookimpl\ndef on_event(event, ctx):\n    return 'quick'\n"


def test_a_plugin_with_all_its_threads_stuck_fails_fast_and_others_keep_theirs(tmp_path):
    hang = plugin_file(tmp_path, "hang", HANG_ON_STOPPED)
    quick = plugin_file(tmp_path, "quick", QUICK)
    _, dispatcher = make(load=[hang, quick], call_timeout=0.3, max_calls_per_plugin=2)
    try:
        for _ in range(2):  # each time out, and leaves a thread stuck
            result = dispatcher.dispatch(STOPPED)
            assert "on_state_change timed out after 0.3s" in result.plugins["hang"].detail
        time.sleep(0.35)
        started = time.monotonic()
        result = dispatcher.dispatch(STOPPED)
        assert time.monotonic() - started < 0.2  # not another 0.3 s: fails at once
        assert "all 2 call threads of the plugin are stuck" in result.plugins["hang"].detail
        assert result.plugins["quick"].status == "handled"
    finally:
        dispatcher.shutdown()


def test_64_hung_calls_never_make_a_healthy_plugin_time_out(tmp_path):
    """The issue's reproduction in process: 64 events that hang one plugin forever, then
    80 healthy ones, dispatched from 8 threads. (A shared pool of 64 failed all 80.)"""
    from concurrent.futures import ThreadPoolExecutor

    hang = plugin_file(tmp_path, "hang", HANG_ON_STOPPED)
    quick = plugin_file(tmp_path, "quick", QUICK)
    _, dispatcher = make(load=[hang, quick], call_timeout=0.5)
    events = [STOPPED] * 64 + [MAINTENANCE] * 80  # the hung calls first: they stay stuck
    try:
        with ThreadPoolExecutor(8) as handlers:
            results = list(handlers.map(lambda ev: (ev, dispatcher.dispatch(ev)), events))
    finally:
        dispatcher.shutdown()
    healthy = [r for ev, r in results if ev is MAINTENANCE]
    assert len(healthy) == 80 and all(r.outcome == "handled" for r in healthy), \
        [r.error for r in healthy if r.outcome != "handled"]
    hung = [r for ev, r in results if ev is STOPPED]
    assert all(r.plugins["quick"].status == "handled" for r in hung)
    # The calls that ran hung and failed (an attempt each); once all of the plugin's threads
    # were stuck, or none was free in time, the rest were never started: they wait (deferred).
    statuses = [r.plugins["hang"] for r in hung]
    assert {p.status for p in statuses} == {"failed", "deferred"}, {p.status for p in statuses}
    assert all(p.detail.startswith("waiting for plugin hang") for p in statuses if p.status == "deferred")


def test_calls_that_never_return_do_not_keep_the_process_alive(tmp_path):
    hang = plugin_file(tmp_path, "hang", HANG_ON_STOPPED)
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_plugins import STOPPED, make
        _, dispatcher = make(load=[{hang!r}], call_timeout=0.2)
        for _ in range(3):
            assert dispatcher.dispatch(STOPPED).outcome == "failed"
        dispatcher.shutdown()
        print("done", flush=True)
    """)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    assert time.monotonic() - started < 15  # interpreter start-up and imports; never the hung calls


def test_a_hung_observer_never_holds_the_caller_and_the_others_go_on(tmp_path, caplog):
    hang = plugin_file(tmp_path, "stuck", """
        import threading
        @hookimpl
        def on_settled(event, result, ctx):
            threading.Event().wait()
    """)
    seen = plugin_file(tmp_path, "seen", """
        outcomes = []
        @hookimpl
        def on_settled(event, result, ctx):
            outcomes.append(result.outcome)
    """)
    plugins, dispatcher = make(load=[hang, seen], call_timeout=0.3)
    result = dispatcher.dispatch(STOPPED)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, "ecs_worker.dispatch"):
        for _ in range(5):
            dispatcher.run_on_settled(STOPPED, result)
        assert time.monotonic() - started < 0.2
        time.sleep(0.4)  # the first call has now overrun: the rest are dropped, not queued
        dispatcher.run_on_settled(STOPPED, result)
        started = time.monotonic()
        dispatcher.shutdown()
    assert time.monotonic() - started < 1.5  # waits for the observers at most call_timeout
    assert plugins.pm.get_plugin("seen").outcomes == ["ignored"] * 6
    assert "plugin stuck on_settled not called: its previous call overran 0.3s; 1 call(s) dropped" in caplog.text


def test_max_calls_per_plugin_is_validated():
    with pytest.raises(ConfigError, match=r"\[plugins\] max_calls_per_plugin: must be between 1 and 1024"):
        parse_config({"plugins": {"max_calls_per_plugin": 0}})


def test_errors_and_log_lines_never_carry_a_whole_body(tmp_path, caplog):
    from ecs_worker.text import one_line

    assert one_line(ValueError("x" * 5000)).endswith("…") and len(one_line(ValueError("x" * 5000))) == 300
    assert one_line(RuntimeError("first\nsecond")) == "RuntimeError: first…"
    assert one_line(SystemExit()) == "SystemExit"
    blabber = plugin_file(tmp_path, "blabber", """
        import json
        @hookimpl
        def on_event(event, ctx):
            raise ValueError("cannot handle " + json.dumps(event.raw) * 500)
    """)
    talker = plugin_file(tmp_path, "talker", "@hookimpl\ndef on_event(event, ctx):\n    return 'y' * 100000\n")
    _, dispatcher = make(load=[blabber, talker])
    with caplog.at_level(logging.DEBUG, "ecs_worker"):
        result = dispatcher.dispatch(MAINTENANCE)
        dispatcher.run_on_settled(MAINTENANCE, result, wait=True)
    dispatcher.shutdown()
    assert len(result.error) <= len("blabber: ") + 300 and result.error.endswith("…")
    assert len(result.plugins["talker"].detail) == 300
    assert max(len(r.getMessage()) for r in caplog.records) < 1000
