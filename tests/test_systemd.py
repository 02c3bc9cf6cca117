"""The systemd units: valid (`systemd-analyze verify`), hardened (`security` 2.5 or lower),
and wired to what the worker does (notify, watchdog, state, credentials, exit 2)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
INSTALLED_AT = "/opt/ecs-worker/bin/ecs-worker"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt: systemd)")
MAX_WAIT_SECONDS = 30  # the longest long poll ([mns] wait_seconds)


def _settings(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, value
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def _local_copy(unit: Path, tmp_path: Path, name: str | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's ecs-worker: `verify` insists the
    binary exists, and the unit names where the README installs it."""
    text = unit.read_text()
    assert INSTALLED_AT in text
    local = Path(sys.executable).with_name("ecs-worker")
    copy = tmp_path / (name or unit.name)
    copy.write_text(text.replace(INSTALLED_AT, str(local)))
    return copy


@pytest.mark.parametrize("name", ["ecs-worker.service", "ecs-worker@.service"])
def test_unit_is_wired_to_what_the_worker_does(name):
    s = _settings(UNITS / name)
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert _seconds(s["WatchdogSec"][0]) > 2 * MAX_WAIT_SECONDS
    assert s["Restart"] == ["always"] and s["RestartPreventExitStatus"] == ["2"]
    assert s["StateDirectory"] and s["LoadCredential"][0].startswith("secret:/etc/ecs-worker/")
    assert s["KillMode"] == ["mixed"]  # one SIGTERM to the worker: it drains
    # Stop timeout covers shutdown_timeout (30 s default) plus one long poll.
    assert _seconds(s["TimeoutStopSec"][0]) >= 30 + MAX_WAIT_SECONDS
    assert s["ExecStart"][0].startswith(f"{INSTALLED_AT} run -c /etc/ecs-worker/")


@needs_analyze
@pytest.mark.parametrize("name", ["ecs-worker.service", "ecs-worker@.service"])
def test_unit_passes_systemd_analyze_verify(name, tmp_path):
    copy = _local_copy(UNITS / name, tmp_path)
    run = subprocess.run([ANALYZE, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    # verify exits 0 even for unknown keys: any output is a finding.
    assert run.returncode == 0 and not run.stdout.strip() and not run.stderr.strip(), run.stderr


@needs_analyze
@pytest.mark.parametrize("name,as_name", [("ecs-worker.service", None),
                                          ("ecs-worker@.service", "ecs-worker@spot-events.service")])
def test_unit_is_hardened_to_exposure_2_5_or_lower(name, as_name, tmp_path):
    copy = _local_copy(UNITS / name, tmp_path, as_name)
    run = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(copy)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", run.stdout)
    assert m, run.stdout[-500:] + run.stderr
    assert float(m.group(1)) <= 2.5, run.stdout
