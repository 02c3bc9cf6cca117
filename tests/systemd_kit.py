"""The shipped unit's settings, and a model of systemd's start-limit logic to drive with
worker exits (systemd.unit(5): StartLimitIntervalSec=, StartLimitBurst=)."""
from __future__ import annotations

import re
from pathlib import Path

UNITS = Path(__file__).resolve().parent.parent / "systemd"


def settings(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, value
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


class StartLimit:
    """systemd's rate limit on starts: a window opens at a start; more than `burst` starts
    within `interval` of its opening are refused (the unit enters `failed`, "start request
    repeated too quickly"); a start after the window has passed opens a new one."""

    def __init__(self, interval: float, burst: int) -> None:
        self.interval, self.burst = interval, burst
        self.begin, self.count = None, 0

    def start(self, now: float) -> bool:
        if self.begin is None or now - self.begin > self.interval:
            self.begin, self.count = now, 0
        self.count += 1
        return self.count <= self.burst

    @classmethod
    def of(cls, unit: Path) -> "StartLimit":
        s = settings(unit)
        return cls(seconds(s["StartLimitIntervalSec"][0]), int(s["StartLimitBurst"][0]))


def restart_sec(unit: Path) -> float:
    return seconds(settings(unit)["RestartSec"][0])
