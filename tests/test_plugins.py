"""The plugin manager and dispatch: loading, blocking, validation, isolation, outcomes."""
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import Future

import pytest

from ecs_worker import parse_event
from ecs_worker.config import parse_config
from ecs_worker.context import Runtime
from ecs_worker.dispatch import Dispatcher
from ecs_worker.manager import DEFAULT_PLUGINS, PluginError, load_plugins

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
    for module in DEFAULT_PLUGINS:
        name = module.rsplit(".", 1)[1]
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
