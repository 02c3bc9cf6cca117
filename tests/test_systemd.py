"""The systemd units: valid (`systemd-analyze verify`), hardened (`security` 2.5 or lower),
and wired to what the worker does (notify, watchdog, state, credentials, exit 2)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from systemd_kit import UNITS, StartLimit, restart_sec, seconds as _seconds, settings as _settings

INSTALLED_AT = "/opt/ecs-worker/bin/ecs-worker"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt: systemd)")
MAX_WAIT_SECONDS = 30  # the longest long poll ([mns] wait_seconds)


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


@pytest.mark.parametrize("name", ["ecs-worker.service", "ecs-worker@.service"])
def test_the_start_limit_never_gives_up_on_a_worker_that_restarts_for_a_stuck_plugin(name):
    """Exit 3 (a plugin stuck past stuck_exit_seconds) comes at most once per
    stuck_exit_seconds after a start: at that pace the unit's start limit never trips,
    however long the plugin stays broken (a day of it, here)."""
    from ecs_worker.config import PluginsConfig

    unit = UNITS / name
    limit, pause = StartLimit.of(unit), restart_sec(unit)
    now = 0.0
    while now < 86400:
        assert limit.start(now), f"start refused at {now:.0f}s"
        now += PluginsConfig().stuck_exit_seconds + pause


def test_the_start_limit_model_trips_on_a_crash_loop():
    """The model itself: starts every RestartSec (a worker that dies at once) are refused
    after StartLimitBurst within StartLimitIntervalSec, as systemd does."""
    unit = UNITS / "ecs-worker.service"
    limit, pause = StartLimit.of(unit), restart_sec(unit)
    allowed = [limit.start(i * pause) for i in range(limit.burst + 1)]
    assert allowed == [True] * limit.burst + [False]
