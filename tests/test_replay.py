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
