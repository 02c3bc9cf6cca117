"""ECS_WORKER_LOAD_PLUGINS: which installed (entry-point) plugins load. A broken third-party
plugin in the same environment takes nothing down when it is not named."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import broken_plugin

from ecs_worker.plugin_host.manager import DEFAULT_PLUGINS, builtin_name

EVENT = json.dumps({"ver": "1.0", "id": "e1", "product": "ECS", "name": "Instance:StateChange",
                    "resourceId": "acs:ecs:cn-hangzhou:1:instance/i-1", "regionId": "cn-hangzhou",
                    "content": {"resourceId": "i-1", "state": "Running"}})


def run(env: dict, *args: str, load: str | None) -> subprocess.CompletedProcess:
    env = dict(env)
    env.pop("ECS_WORKER_LOAD_PLUGINS", None)
    if load is not None:
        env["ECS_WORKER_LOAD_PLUGINS"] = load
    return subprocess.run([sys.executable, "-m", "ecs_worker", *args], capture_output=True, text=True,
                          timeout=60, env=env, input=EVENT)


def test_unset_loads_every_installed_plugin_so_the_broken_one_breaks_replay(tmp_path):
    env = broken_plugin.install(tmp_path / "site")
    proc = run(env, "replay", "-", load=None)
    assert proc.returncode == 2 and "broken third-party plugin" in proc.stderr


def test_named_plugins_only(tmp_path):
    env = broken_plugin.install(tmp_path / "site")
    ok = run(env, "replay", "-", load="hello")
    assert ok.returncode == 0, ok.stderr
    listed = run(env, "plugins", "--json", load="hello")
    names = {p["name"] for p in json.loads(listed.stdout)}
    assert "hello" in names and "broken" not in names
    none = run(env, "plugins", "--json", load="")
    assert not {p["name"] for p in json.loads(none.stdout)} & {"hello", "broken"}
    assert {"log", "restart", "slb", "webhook"} <= {p["name"] for p in json.loads(none.stdout)}  # built-ins stay


def test_plugins_lists_versions_aligned(tmp_path):
    env = broken_plugin.install(tmp_path / "site")
    proc = run(env, "plugins", load="broken, hello")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "ORIGIN", "HOOKS"]
    broken = next(line for line in lines if line.startswith("broken "))
    assert "9.9.1" in broken and "entry point (ecs-worker-broken)" in broken
    columns = {line.index(line.split()[1]) for line in lines if line and not line[0].isspace()}
    assert len(columns) == 1  # the version column starts at the same place on every row


def test_unknown_name_in_the_environment_is_refused_naming_the_known(tmp_path):
    env = broken_plugin.install(tmp_path / "site")
    proc = run(env, "plugins", load="hello,nosuch")
    assert proc.returncode == 2
    assert "ECS_WORKER_LOAD_PLUGINS: no plugin named 'nosuch'" in proc.stderr
    builtins = ", ".join(builtin_name(spec) for spec in DEFAULT_PLUGINS)  # e.g. "log, restart, slb, ..."
    assert f"known: {builtins}" in proc.stderr and "hello" in proc.stderr


def test_unknown_name_in_disabled_is_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[plugins]\ndisabled = ["restrat"]\n')
    proc = run(dict(os.environ), "check-config", "-c", str(cfg), load="hello")
    assert proc.returncode == 2
    assert f"{cfg}: [plugins] disabled: no plugin named 'restrat' (known: log, restart," in proc.stderr
