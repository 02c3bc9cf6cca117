"""Issue 13's operator polish: secrets from files or $CREDENTIALS_DIRECTORY, metrics that start at 0,
build and process metrics, webhook delivery counts, replay rows with each plugin's detail, and an
unreachable endpoint named in the error."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from prometheus_client import generate_latest

from ecs_worker.observability import metrics
from ecs_worker.config import ConfigError, CredentialsConfig
from ecs_worker.cloud.credentials import credentials_provider

# test_webhook's receiver and worker fixtures
from test_webhook import STOPPED, TOKEN, notifier, receiver, settle, wait_until, worker  # noqa: F401

SECRET = "canary-secret-from-a-file"


def test_access_key_secret_file_bare_name_is_read_from_credentials_directory(tmp_path, monkeypatch):
    (tmp_path / "secret").write_text(SECRET + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)  # not where the file is: only the directory can find it
    provider = credentials_provider(CredentialsConfig(access_key_id="LTAIx", access_key_secret_file="secret"))
    assert provider.get_credentials().access_key_secret == SECRET
    assert SECRET not in provider.describe() and str(tmp_path / "secret") in provider.describe()
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="access_key_secret_file: cannot read secret"):
        credentials_provider(CredentialsConfig(access_key_id="LTAIx", access_key_secret_file="secret"))


def test_webhook_url_and_secret_from_files(tmp_path, monkeypatch, receiver, worker):  # noqa: F811
    (tmp_path / "hook-url").write_text(f"{receiver.base}/robot/send?access_token={TOKEN}\n")
    (tmp_path / "sign").write_text("SEC-from-a-file\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    dispatcher = worker({"targets": [{"url_file": "hook-url", "secret_file": "sign", "format": "dingtalk",
                                      "outcomes": ["ignored"]}], "retries": 0})
    settle(dispatcher, STOPPED)
    (request,) = receiver.wait_for(1)
    assert request["path"] == "/robot/send" and request["query"]["access_token"] == [TOKEN]
    assert "sign" in request["query"] and "timestamp" in request["query"]  # signed with the file's secret
    label = notifier(dispatcher).senders[0].target.label
    assert wait_until(lambda: metrics.value("ecs_worker_webhook_notifications_total",
                                            {"target": label, "result": "sent"}) >= 1)


@pytest.mark.parametrize("target, expected", [
    ({"url": "https://a.example/x", "url_file": "hook-url"}, "url and url_file are exclusive"),
    ({"url_file": "/nonexistent/hook-url"}, "url_file: cannot read /nonexistent/hook-url"),
    ({"format": "json"}, "url: required"),
])
def test_webhook_file_keys_are_checked(target, expected):
    from ecs_worker.config import parse_config
    from ecs_worker.plugin_host.manager import load_plugins

    config = parse_config({"plugins": {"disabled": ["hello"], "webhook": {"targets": [target]}}})
    with pytest.raises(ConfigError, match=expected):
        load_plugins(config)


def test_webhook_drops_and_failures_are_counted(worker):  # noqa: F811
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    dispatcher = worker({"targets": [{"url": f"http://127.0.0.1:{dead}/hook", "name": "dead-hook",
                                      "outcomes": ["ignored"]}], "retries": 0, "timeout": 0.5})
    assert metrics.value("ecs_worker_webhook_notifications_total", {"target": "dead-hook", "result": "failed"}) == 0
    assert metrics.REGISTRY.get_sample_value("ecs_worker_webhook_notifications_total",
                                             {"target": "dead-hook", "result": "dropped"}) == 0.0  # present at 0
    settle(dispatcher, STOPPED)
    assert wait_until(lambda: metrics.value("ecs_worker_webhook_notifications_total",
                                            {"target": "dead-hook", "result": "failed"}) >= 1)


def test_labelled_counters_start_at_zero_and_build_and_process_metrics_are_served():
    metrics.known_labels(["log", "restart", "slb"])
    get = metrics.REGISTRY.get_sample_value
    assert get("ecs_worker_dead_letters_total", {"reason": "invalid"}) == 0.0
    assert get("ecs_worker_dead_letters_total", {"reason": "max_attempts"}) == 0.0
    assert get("ecs_worker_events_total", {"name": "Instance:StateChange", "outcome": "failed"}) is not None
    assert get("ecs_worker_plugin_errors_total", {"plugin": "slb"}) is not None
    assert get("ecs_worker_actions_total", {"plugin": "restart", "action": "StartInstance",
                                            "result": "error"}) is not None
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'ecs_worker_build_info{' in text and 'version="' in text
    assert "process_resident_memory_bytes" in text and "python_info" in text


def test_replay_json_rows_carry_what_each_plugin_returned(tmp_path):
    plugin = tmp_path / "noter.py"
    plugin.write_text("from ecs_worker import hookimpl\n\n@hookimpl\ndef on_state_change(event, ctx):\n"
                      "    return 'noted ' + event.state\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[plugins]\nload = ["{plugin}"]\ndisabled = ["restart", "slb", "webhook", "hello"]\n')
    event = json.dumps({"id": "e1", "name": "Instance:StateChange", "content": {"resourceId": "i-1",
                                                                                "state": "Stopped"}})
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", "replay", "-", "--json", "-c", str(cfg)],
                          input=event, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["actions"] == [] and row["plugins"]["noter"] == {"status": "handled", "detail": "noted Stopped"}


def test_replay_help_names_its_exit_codes():
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", "replay", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert "exit codes" in proc.stdout and "0  every event was handled or ignored" in proc.stdout


def test_unreachable_endpoint_is_named():
    from ecs_worker.cloud.credentials import Credentials, StaticProvider
    from ecs_worker.queue.source import MnsError, MnsQueue

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = MnsQueue(f"http://127.0.0.1:{port}", "ecs-events", StaticProvider(Credentials("AK", "sk")), 1)
    with pytest.raises(MnsError) as err:
        queue.visibility_timeout()
    assert f"reaching http://127.0.0.1:{port}" in str(err.value) and "sk" not in str(err.value).split(":")


def test_bare_names_outside_systemd_are_left_to_the_service(tmp_path, monkeypatch):
    """check-config in a shell (no $CREDENTIALS_DIRECTORY) accepts bare names and says so; the
    service, which systemd gives the directory, reads them at start-up."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[mns]\nendpoint = "https://1.mns.cn-hangzhou.aliyuncs.com"\n'
                   '[credentials]\naccess_key_id = "LTAIx"\naccess_key_secret_file = "secret"\n'
                   '[[plugins.webhook.targets]]\nurl_file = "hook-url"\n')
    env = {k: v for k, v in __import__("os").environ.items() if k != "CREDENTIALS_DIRECTORY"}
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", "check-config", "-c", str(cfg)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "$CREDENTIALS_DIRECTORY" in proc.stderr and "OK" in proc.stdout
    # At start-up with the directory set, the deferred webhook URL is read.
    from ecs_worker.plugins.webhook import Target
    target = Target(url_file="hook-url")
    assert target.url == ""
    (tmp_path / "hook-url").write_text("https://hooks.example.com/x\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert target.resolved().url == "https://hooks.example.com/x"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="url_file: cannot read"):
        target.resolved()
