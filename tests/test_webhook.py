"""The `webhook` plugin against a local HTTP receiver: bodies, filters, retries, isolation."""
import base64
import hashlib
import hmac
import json
import logging
import textwrap
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ecs_worker import parse_event
from ecs_worker.config import ConfigError, parse_config
from ecs_worker.plugin_host.context import Runtime
from ecs_worker.plugin_host.dispatch import Dispatcher
from ecs_worker.plugin_host.manager import DEFAULT_PLUGINS, builtin_name, load_plugins
from ecs_worker.plugins import webhook

STOPPED = parse_event('{"id": "e1", "name": "Instance:StateChange", "regionId": "cn-hangzhou", '
                      '"content": {"resourceId": "i-1", "state": "Stopped"}}')
SPOT = parse_event('{"id": "e2", "name": "Instance:PreemptibleInstanceInterruption", '
                   '"content": {"instanceId": "i-2", "action": "delete"}}')
TOKEN = "tok-6f1e9a-do-not-log"
SIGN_SECRET = "SEC-sign-secret-do-not-log"
# Only webhook and the tests' own plugins: other built-ins (restart defers stopped instances)
# would change the outcomes these tests notify about.
OTHER_PLUGINS = ["hello"] + [builtin_name(m) for m in DEFAULT_PLUGINS if builtin_name(m) != "webhook"]
OUTCOMES = ["handled", "failed", "ignored", "invalid", "deferred"]  # notify every outcome


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: list[tuple[int, bytes]] = []  # consumed per request; then `default`
        self.default = (200, b'{"errcode": 0, "errmsg": "ok"}')
        self.hang = threading.Event()  # set() = requests hang until release
        self.released = threading.Event()
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                url = urllib.parse.urlsplit(self.path)
                with receiver.cond:
                    receiver.requests.append({"path": url.path,
                                              "query": urllib.parse.parse_qs(url.query),
                                              "headers": dict(self.headers), "body": json.loads(body)})
                    receiver.cond.notify_all()
                    status, reply = receiver.script.pop(0) if receiver.script else receiver.default
                if receiver.hang.is_set():
                    receiver.released.wait(10)
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def bodies(self, path: str) -> list[dict]:
        return [r["body"] for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def worker(tmp_path):
    """make(webhook_section, load=[plugin files]) -> started Dispatcher; shut down after."""
    started = []

    def make(section, load=()):
        config = parse_config({"plugins": {"load": list(load), "disabled": OTHER_PLUGINS,
                                           "call_timeout": 5.0, "webhook": section}})
        plugins = load_plugins(config)
        dispatcher = Dispatcher(plugins.pm, Runtime(config, plugins.configs, dry_run=True), 5.0)
        dispatcher.startup()
        started.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in started:
        dispatcher.shutdown()


def plugin_file(tmp_path, name, body):
    path = tmp_path / f"{name}.py"
    path.write_text("from ecs_worker import hookimpl\n" + textwrap.dedent(body))
    return str(path)


def notifier(dispatcher) -> webhook.WebhookFanout:
    """The registered webhook plugin's fan-out (its state, per registration)."""
    return dispatcher.pm.get_plugin("webhook").fanout


def settle(dispatcher, event):
    result = dispatcher.dispatch(event)
    dispatcher.run_on_settled(event, result, wait=True)  # as the harness does: on_settled has run
    return result


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


ACTOR = """
    @hookimpl
    def on_state_change(event, ctx):
        ctx.act("StartInstance", event.instance_id, print, event.instance_id)
        return "restarted"
"""


def test_json_body_per_settled_event_with_its_actions(receiver, worker, tmp_path):
    dispatcher = worker({"targets": [{"url": receiver.base + "/hook"}]},
                        load=[plugin_file(tmp_path, "actor", ACTOR)])
    settle(dispatcher, SPOT)  # nobody handles it: "ignored" is not notified by default
    settle(dispatcher, STOPPED)
    dispatcher.shutdown()  # drains the queue
    (request,) = receiver.requests
    assert request["headers"]["Content-Type"].startswith("application/json")
    body = request["body"]
    assert {k: body[k] for k in ("id", "name", "instance_id", "outcome", "error")} == {
        "id": "e1", "name": "Instance:StateChange", "instance_id": "i-1", "outcome": "handled",
        "error": None}
    (action,) = body["actions"]  # the `replay --json` action record, whatever else it grows
    assert {k: action[k] for k in ("plugin", "action", "target", "dry_run", "result")} == {
        "plugin": "actor", "action": "StartInstance", "target": "i-1", "dry_run": True,
        "result": "planned"}
    assert body["event"]["state"] == "Stopped" and body["event"]["region"] == "cn-hangzhou"
    assert body["host"] and body["time"].endswith("+00:00")


def test_invalid_messages_are_notified_to_catch_all_targets(receiver, worker):
    from ecs_worker.plugin_host.outcomes import invalid

    dispatcher = worker({"targets": [{"url": receiver.base + "/all"},
                                     {"url": receiver.base + "/state", "events": ["Instance:*"]}]})
    dispatcher.run_on_settled(None, invalid("body is neither JSON nor base64"))
    dispatcher.shutdown()
    assert [r["path"] for r in receiver.requests] == ["/all"]
    assert receiver.requests[0]["body"]["outcome"] == "invalid"


def test_dingtalk_and_slack_bodies(receiver, worker, tmp_path):
    dispatcher = worker({"targets": [
        {"url": f"{receiver.base}/robot/send?access_token={TOKEN}", "format": "dingtalk",
         "secret": SIGN_SECRET},
        {"url": receiver.base + "/services/T0/B0/x", "format": "slack"}]},
        load=[plugin_file(tmp_path, "actor", ACTOR)])
    before = time.time() * 1000
    settle(dispatcher, STOPPED)
    dispatcher.shutdown()
    ding = next(r for r in receiver.requests if r["path"] == "/robot/send")
    assert ding["body"]["msgtype"] == "markdown"
    markdown = ding["body"]["markdown"]
    assert markdown["title"] == "Instance:StateChange i-1: handled"
    assert "StartInstance i-1" in markdown["text"] and "(dry-run)" in markdown["text"]
    # DingTalk's signed robot: sign = base64(HMAC-SHA256(secret, "<timestamp>\n<secret>")).
    stamp = ding["query"]["timestamp"][0]
    expected = base64.b64encode(hmac.new(SIGN_SECRET.encode(), f"{stamp}\n{SIGN_SECRET}".encode(),
                                         hashlib.sha256).digest()).decode()
    assert ding["query"]["access_token"] == [TOKEN] and ding["query"]["sign"] == [expected]
    assert before - 1 <= int(stamp) <= time.time() * 1000 + 1
    (slack,) = receiver.bodies("/services/T0/B0/x")
    assert set(slack) == {"text"}
    assert slack["text"].startswith("*Instance:StateChange i-1: handled*")
    assert "state: Stopped" in slack["text"]


def test_each_target_gets_only_the_events_and_outcomes_it_asked_for(receiver, worker, tmp_path):
    dispatcher = worker({"targets": [
        {"url": receiver.base + "/state", "events": ["Instance:StateChange"], "outcomes": OUTCOMES},
        {"url": receiver.base + "/spot", "events": ["Instance:Preemptible*"], "outcomes": OUTCOMES},
        {"url": receiver.base + "/failures", "outcomes": ["failed"]}]})
    settle(dispatcher, STOPPED)
    settle(dispatcher, SPOT)
    dispatcher.shutdown()
    assert [b["id"] for b in receiver.bodies("/state")] == ["e1"]
    assert [b["id"] for b in receiver.bodies("/spot")] == ["e2"]
    assert receiver.bodies("/failures") == []



def test_retries_server_errors_then_delivers_once(receiver, worker):
    receiver.script = [(503, b"busy"), (500, b"oops")]
    dispatcher = worker({"targets": [{"url": receiver.base + "/hook", "outcomes": OUTCOMES}],
                         "retries": 3, "backoff": 0.02})
    stats = notifier(dispatcher).senders[0].counts
    settle(dispatcher, STOPPED)
    assert wait_until(lambda: stats["sent"] == 1)
    assert len(receiver.requests) == 3 and stats["failed"] == 0
    assert {r["body"]["id"] for r in receiver.requests} == {"e1"}  # the same notification


def test_client_errors_are_not_retried_and_give_up_with_a_warning(receiver, worker, caplog):
    receiver.default = (404, b"no_service")
    dispatcher = worker({"targets": [{"url": receiver.base + "/gone", "outcomes": OUTCOMES}],
                         "retries": 3, "backoff": 0.02})
    stats = notifier(dispatcher).senders[0].counts
    with caplog.at_level(logging.WARNING, "ecs_worker.plugin.webhook"):
        settle(dispatcher, STOPPED)
        assert wait_until(lambda: stats["failed"] == 1)
    assert len(receiver.requests) == 1
    assert "gave up on the notification for e1 after 1 tries: HTTP 404" in caplog.text


def test_hanging_receiver_never_delays_dispatch_or_other_plugins(receiver, worker, tmp_path):
    observer = plugin_file(tmp_path, "observer", """
        seen = []
        @hookimpl(trylast=True)
        def on_settled(event, result, ctx):
            seen.append(result.outcome)
    """)
    receiver.hang.set()
    dispatcher = worker({"targets": [{"url": receiver.base + "/slow"}], "timeout": 0.3,
                         "retries": 0, "drain_timeout": 0.5},
                        load=[plugin_file(tmp_path, "actor", ACTOR), observer])
    stats = notifier(dispatcher).senders[0].counts
    for _ in range(3):
        result = dispatcher.dispatch(STOPPED)
        started = time.monotonic()
        dispatcher.run_on_settled(STOPPED, result)
        assert time.monotonic() - started < 0.1
        assert result.outcome == "handled" and result.plugins["actor"].status == "handled"
    # Observers run on their own thread, in order, after `settled` has returned.
    assert wait_until(lambda: dispatcher.pm.get_plugin("observer").seen == ["handled"] * 3)
    assert wait_until(lambda: stats["failed"] >= 1)  # the read timed out: given up, not stuck
    started = time.monotonic()
    dispatcher.shutdown()
    assert time.monotonic() - started < 1.5  # drain_timeout, not the receiver's hang
    # Every notification is accounted for: timed out, or dropped at the shutdown deadline.
    assert wait_until(lambda: stats["failed"] + stats["dropped"] == 3, timeout=2)
    assert stats["sent"] == 0


def test_full_queue_drops_the_oldest_and_counts_it(receiver, worker, caplog):
    receiver.hang.set()
    dispatcher = worker({"targets": [{"url": receiver.base + "/slow", "outcomes": OUTCOMES}],
                         "queue_size": 2, "timeout": 5, "retries": 0})
    stats = notifier(dispatcher).senders[0].counts
    events = [parse_event(json.dumps({"id": f"n{i}", "name": "Instance:StateChange",
                                      "content": {"resourceId": "i-1", "state": "Running"}}))
              for i in range(5)]
    with caplog.at_level(logging.WARNING, "ecs_worker.plugin.webhook"):
        settle(dispatcher, events[0])
        receiver.wait_for(1)  # n0 is in flight; the queue holds two
        for event in events[1:]:
            settle(dispatcher, event)
    assert stats["dropped"] == 2 and "oldest dropped" in caplog.text
    receiver.released.set()
    dispatcher.shutdown()
    assert [r["body"]["id"] for r in receiver.requests] == ["n0", "n3", "n4"]


def test_webhook_secrets_never_reach_logs_or_errors(receiver, worker, caplog):
    receiver.script = [(500, b"")]
    receiver.default = (200, b'{"errcode": 310000, "errmsg": "sign not match"}')
    closed_port = f"http://127.0.0.1:{_free_port()}"
    section = {"targets": [
        {"url": f"{receiver.base}/robot/send?access_token={TOKEN}", "format": "dingtalk",
         "secret": SIGN_SECRET, "outcomes": OUTCOMES},
        {"url": f"{closed_port}/robot/send?access_token={TOKEN}", "format": "dingtalk",
         "outcomes": OUTCOMES}],
        "retries": 1, "backoff": 0.01}
    with caplog.at_level(logging.DEBUG):
        dispatcher = worker(section)
        senders = notifier(dispatcher).senders
        settle(dispatcher, STOPPED)
        assert wait_until(lambda: all(s.counts["failed"] == 1 for s in senders))
        dispatcher.shutdown()
    assert "DingTalk errcode 310000" in caplog.text and "Connection" in caplog.text
    assert f"{receiver.base}/..." in caplog.text
    for record in caplog.records:
        text = record.getMessage()
        assert TOKEN not in text and SIGN_SECRET not in text
    config = load_plugins(parse_config({"plugins": {"webhook": section}})).configs["webhook"]
    assert TOKEN not in repr(config) and SIGN_SECRET not in repr(config)
    with pytest.raises(ConfigError) as info:
        parse_and_load({"targets": [{"url": f"ftp://robot/send?access_token={TOKEN}"}]})
    assert "targets[0] url: must be an http:// or https:// URL" in str(info.value)
    assert TOKEN not in str(info.value)


def test_bad_target_tables_fail_at_start_naming_the_key():
    with pytest.raises(ConfigError, match=r"\[plugins.webhook\] targets\[1\] format: must be one of"):
        parse_and_load({"targets": [{"url": "https://a.example/x"},
                                    {"url": "https://b.example/x", "format": "teams"}]})
    with pytest.raises(ConfigError, match=r"targets\[0\] outcomes: 'done' is not one of"):
        parse_and_load({"targets": [{"url": "https://a.example/x", "outcomes": ["done"]}]})
    with pytest.raises(ConfigError, match=r"targets\[0\] url: required"):
        parse_and_load({"targets": [{"format": "slack"}]})


def parse_and_load(section):
    return load_plugins(parse_config({"plugins": {"webhook": section}}))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
