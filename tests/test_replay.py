"""`ecs-worker replay` end to end, through a subprocess, as a user runs it."""
import json
import subprocess
import sys
from pathlib import Path

EVENTS = Path(__file__).resolve().parent.parent / "examples" / "events"
SAMPLES = sorted(str(p) for p in EVENTS.iterdir())
KEYS = {"id", "name", "instance_id", "outcome", "actions", "error"}


def replay(*args, stdin=None, config=None):
    cmd = [sys.executable, "-m", "ecs_worker", "replay", *args]
    if config:
        cmd += ["-c", str(config)]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)


def rows(proc):
    return [json.loads(line) for line in proc.stdout.splitlines()]


def quiet_config(tmp_path, extra=""):
    # Only the log plugin and the example plugin: no cloud access needed.
    path = tmp_path / "c.toml"
    path.write_text('[plugins]\ndisabled = ["restart", "slb", "maintenance", "webhook"]\n' + extra)
    return path


def test_dry_run_json_prints_one_contract_row_per_sample_event():
    proc = replay(*SAMPLES, "--dry-run", "--json")
    out = rows(proc)
    assert len(out) == len(SAMPLES)
    for row in out:
        assert set(row) >= KEYS
        assert row["outcome"] in {"handled", "failed", "ignored", "invalid", "deferred"}
        for action in row["actions"]:
            assert set(action) >= {"plugin", "action", "target", "dry_run"} and action["dry_run"] is True
    by_name = {r["name"] for r in out}
    assert "Instance:PreemptibleInstanceInterruption" in by_name and "Instance:StateChange" in by_name


def test_json_lines_with_a_bad_line_reports_invalid_with_line_number_and_goes_on(tmp_path):
    good = (EVENTS / "cloudmonitor-maintenance.json").read_text().strip()
    events = tmp_path / "events.jsonl"
    events.write_text(f"{good}\nnot json at all\n\n{good}\n")
    proc = replay(str(events), "--json", config=quiet_config(tmp_path))
    out = rows(proc)
    assert [r["outcome"] for r in out] == ["handled", "invalid", "handled"]
    assert out[1]["error"].startswith(f"{events}:2: ")
    assert proc.returncode == 1  # not every event was handled or ignored


def test_json_array_and_stdin(tmp_path):
    docs = [json.loads((EVENTS / "cloudmonitor-maintenance.json").read_text()),
            (EVENTS / "cloudmonitor-preemptible.base64.txt").read_text().strip()]
    proc = replay("-", "--json", stdin=json.dumps(docs), config=quiet_config(tmp_path))
    out = rows(proc)
    assert proc.returncode == 0, proc.stderr
    assert [r["name"] for r in out] == ["Instance:SystemMaintenance.Reboot:Scheduled",
                                         "Instance:PreemptibleInstanceInterruption"]
    assert [r["outcome"] for r in out] == ["handled", "ignored"]


def test_failing_plugin_makes_exit_1_and_reports_the_error(tmp_path):
    plugin = tmp_path / "grumpy.py"
    plugin.write_text("from ecs_worker import hookimpl\n@hookimpl\ndef on_event(event, ctx):\n"
                      "    raise RuntimeError('nope')\n")
    config = quiet_config(tmp_path, f'load = ["{plugin}"]\n')
    proc = replay(str(EVENTS / "cloudmonitor-maintenance.json"), "--json", config=config)
    assert proc.returncode == 1
    assert rows(proc)[0]["error"] == "grumpy: RuntimeError: nope"


def test_human_output_and_missing_file(tmp_path):
    proc = replay(str(EVENTS / "cloudmonitor-maintenance.json"), config=quiet_config(tmp_path))
    assert proc.returncode == 0 and proc.stdout.startswith("handled")
    missing = replay(str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "nope.json" in missing.stderr


def test_every_command_has_help_and_version():
    for args in ([], ["run"], ["replay"], ["plugins"], ["check-config"], ["emulator"], ["demo"]):
        proc = subprocess.run([sys.executable, "-m", "ecs_worker", *args, "--help"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "usage: ecs-worker" in proc.stdout
    version = subprocess.run([sys.executable, "-m", "ecs_worker", "--version"],
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("ecs-worker ")
    usage = subprocess.run([sys.executable, "-m", "ecs_worker", "frobnicate"],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2


def test_help_does_not_import_the_cloud_sdks():
    code = ("import sys; from ecs_worker.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('mns', 'aliyunsdkcore', 'aliyunsdkecs', 'aliyunsdkslb', 'alibabacloud_credentials', 'prometheus_client')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_dead_letter_records_replay_as_the_bodies_they_hold(tmp_path):
    body = (EVENTS / "cloudmonitor-maintenance.json").read_text().strip()
    record = {"time": "2026-11-27T12:00:00+00:00", "queue": "q", "message_id": "M1",
              "reason": "max_attempts", "error": "x", "attempts": 5, "body": body}
    poison = {**record, "message_id": "M2", "reason": "invalid", "body": "not an event"}
    path = tmp_path / "dead-letter.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps(poison) + "\n")
    out = rows(replay(str(path), "--json", config=quiet_config(tmp_path)))
    assert [r["outcome"] for r in out] == ["handled", "invalid"]
    assert out[0]["name"] == "Instance:SystemMaintenance.Reboot:Scheduled"


def test_hostile_records_are_each_reported_invalid_never_a_traceback(tmp_path):
    good = (EVENTS / "cloudmonitor-maintenance.json").read_text().strip().replace("\n", " ").encode()
    hostile = [
        b"null", b"xxxx", b'{"name": "x", "n": ' + b"1" * 5000 + b"}",
        b'{"name": "Instance:StateChange", "id": "\\ud800"}', b'{"name": "x", "id": "a\\u0000b"}',
        b'{"name": "\xff\xfe"}', b"\x00\x01\x02\x03", b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 3000 + b"1" + b"}" * 3000, b'{"name": "x", "pad": "' + b"p" * 70000 + b'"}',
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join([good, *hostile, good]) + b"\n")
    for args in ((str(path),), ("-",)):
        stdin = path.read_bytes() if args == ("-",) else None
        proc = subprocess.run([sys.executable, "-m", "ecs_worker", "replay", "--json", *args,
                               "-c", str(quiet_config(tmp_path))],
                              input=stdin, capture_output=True, timeout=120)
        assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
        out = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [r["outcome"] for r in out] == ["handled", *["invalid"] * len(hostile), "handled"]
        assert all(len(r["error"]) < 300 for r in out[1:-1])
        assert proc.returncode == 1
    errors = [r["error"].split(": ", 1)[1] for r in out[1:-1]]
    assert errors[:3] == ["body is JSON null, not an object",
                          "body is not JSON, and its base64 decodes to binary data, not UTF-8 text (byte 0)",
                          "body holds an integer too long to convert (over 4300 digits)"]


def test_a_whole_file_too_deep_or_not_utf8_is_read_as_lines(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 100000 + b"]" * 100000)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b'{"name": "Instance:StateChange" \xff\xfe}\n')
    proc = replay(str(deep), str(binary), "--json", config=quiet_config(tmp_path))
    assert "Traceback" not in proc.stderr and proc.returncode == 1
    out = rows(proc)
    assert [r["outcome"] for r in out] == ["invalid", "invalid"]
    assert "64 KiB" in out[0]["error"] and "not UTF-8" in out[1]["error"]


def test_a_directory_is_a_usage_error(tmp_path):
    proc = replay(str(tmp_path), config=quiet_config(tmp_path))
    assert proc.returncode == 2 and "Is a directory" in proc.stderr and "Traceback" not in proc.stderr


def test_json_lines_split_only_at_newlines(tmp_path):
    # JSON allows U+2028, U+0085 and form feeds raw inside strings; they do not end a line.
    doc = json.loads((EVENTS / "cloudmonitor-maintenance.json").read_text())
    doc["content"]["note"] = "a\u2028b\u0085c\x0cd"
    record = {"time": "2026-11-27T12:00:00+00:00", "queue": "q", "message_id": "M1", "reason": "x",
              "error": "x", "attempts": 5, "body": json.dumps(doc, ensure_ascii=False)}
    path = tmp_path / "dead-letter.jsonl"
    path.write_text(json.dumps(doc, ensure_ascii=False) + "\r\n" + json.dumps(record, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    proc = replay(str(path), "--json", config=quiet_config(tmp_path))
    assert [r["outcome"] for r in rows(proc)] == ["handled", "handled"], proc.stdout + proc.stderr


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

LINES = st.sampled_from([b'{"id": "a", "name": "Instance:StateChange"}', b"null", b"xxxx", b"[", b"{",
                         b'{"name": "\\ud800"}', b"\xff\xfe", b"\x00", b"\r", b"\xe2\x80\xa8", b"1" * 5000,
                         b"[" * 3000, b'{"time": 1, "message_id": "m", "body": "{}"}', b" "])


@settings(derandomize=True, deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINES | st.binary(max_size=40), max_size=12).map(b"\n".join))
def test_any_replay_file_gives_rows_and_an_exit_code_never_an_exception(tmp_path_factory, content):
    import io

    from ecs_worker.config import parse_config
    from ecs_worker.plugin_host.context import Runtime
    from ecs_worker.plugin_host.dispatch import Dispatcher
    from ecs_worker.plugin_host.manager import load_plugins
    from ecs_worker.operations.replay import run_replay

    path = tmp_path_factory.mktemp("any") / "events.jsonl"
    path.write_bytes(content)
    config = parse_config({"plugins": {"disabled": ["restart", "slb", "webhook", "hello", "log"]}})
    plugins = load_plugins(config)
    dispatcher = Dispatcher(plugins.pm, Runtime(config, plugins.configs, dry_run=True), 5.0)
    out = io.StringIO()
    try:
        code = run_replay([str(path)], dispatcher, elapse_deferrals=True, as_json=True, out=out)
    finally:
        dispatcher.shutdown()
    rows_ = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code in (0, 1) and all(len(r["error"] or "") < 400 for r in rows_)
    assert code == (1 if any(r["outcome"] != "ignored" for r in rows_) else 0)
