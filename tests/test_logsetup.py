"""Logging under systemd: `<N>` syslog priorities on every line when stderr is the journal stream
(JOURNAL_STREAM names its device:inode), and nothing added otherwise."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from ecs_worker.observability.logsetup import configure_logging, priority

SCRIPT = """
import logging, sys
from ecs_worker.observability.logsetup import configure_logging
configure_logging("DEBUG", sys.argv[1])
log = logging.getLogger("ecs_worker.test")
log.debug("d"); log.info("i"); log.warning("w"); log.error("e")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("x")
"""


def run(tmp_path, fmt: str, journal: bool) -> list[str]:
    out = tmp_path / "stderr.log"
    with out.open("wb") as f:
        st = os.fstat(f.fileno())
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        else:
            env["JOURNAL_STREAM"] = "1:2"  # systemd's variable, but stderr is another file (e.g. redirected)
        subprocess.run([sys.executable, "-c", SCRIPT, fmt], stderr=f, env=env, timeout=60, check=True)
    return out.read_text().splitlines()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_priorities_when_stderr_is_the_journal(tmp_path, fmt):
    lines = run(tmp_path, fmt, journal=True)
    assert [line[:3] for line in lines[:4]] == ["<7>", "<6>", "<4>", "<3>"]
    assert all(line.startswith("<3>") for line in lines[4:]) and len(lines) > 4  # the traceback too
    assert "boom" in "".join(lines[4:])


def test_no_prefix_when_stderr_is_not_the_journal(tmp_path):
    lines = run(tmp_path, "text", journal=False)
    assert lines[0].split()[0] == "DEBUG" and not any(line.startswith("<") for line in lines)


def test_priority_table():
    assert [priority(n) for n in (5, 10, 20, 25, 30, 40, 50, 60)] == [7, 7, 6, 6, 4, 3, 2, 2]


def test_plain_stream_without_journal_variable(monkeypatch, capsys):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", "text")
        logging.getLogger("ecs_worker.test").warning("hello")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    assert capsys.readouterr().err[:2] == "20"  # timestamped, no prefix
