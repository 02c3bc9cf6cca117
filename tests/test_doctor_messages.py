"""`doctor`, `check-config` and `run` as an operator meets them: the real cause first, one fix per
error code, whole messages in seconds, the same start-up checks in all three, an honest summary,
and `doctor | head` without a traceback. Real subprocesses, real SDKs, the emulator."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from ecs_worker.emulator import default_state


@pytest.fixture(scope="module")
def emulator():
    from ecs_worker.testing import run_emulator

    state = default_state()
    with run_emulator(state) as emu:
        yield emu


def write_config(tmp_path, emulator, *, secret=None, mns=None, cloud=None, state_dir=None, extra=""):
    path = tmp_path / "config.toml"
    path.write_text(f"""
[mns]
endpoint = "{mns or emulator.mns_endpoint}"
queue = "{default_state()['queues'][0]['name']}"
[cloud]
region = "{emulator.region}"
endpoint = "{cloud or emulator.endpoint}"
protocol = "http"
connect_timeout = 1
read_timeout = 1
[credentials]
access_key_id = "{emulator.access_key_id}"
access_key_secret = "{secret or emulator.access_key_secret}"
[worker]
state_dir = "{state_dir or tmp_path / 'state'}"
[plugins]
disabled = ["hello"]
{extra}""")
    return path


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "ecs_worker", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def lines(out: str, mark: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(mark)]


def test_a_wrong_secret_is_named_once_as_the_cause(tmp_path, emulator):
    proc = cli("doctor", "-c", write_config(tmp_path, emulator, secret="not-the-secret"))
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    first = lines(out, "✗")[0]
    assert first.startswith("✗ queue ecs-events: SignatureDoesNotMatch"), out
    assert out.count("fix: the AccessKey secret does not match its id") == 1, out
    assert "network" not in out and "no instance in the region" not in out, out
    assert "ecs:StartInstance: not tried: the AccessKey was refused" in out, out
    assert "all checks passed" not in out
    summary = out.strip().splitlines()[-1]
    assert summary == (f"{len(lines(out, '✓'))} passed, {len(lines(out, '–'))} not provable, "
                       f"{len(lines(out, '✗'))} failed"), out


def test_an_endpoint_that_never_answers_is_reported_whole_in_seconds(tmp_path, emulator):
    silent = socket.socket()  # accepts connections (the kernel does) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        cfg = write_config(tmp_path, emulator, mns=f"http://{address}", cloud=address)
        started = time.monotonic()
        proc = cli("doctor", "-c", cfg)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert elapsed < 12, f"doctor took {elapsed:.1f}s"
    failed = lines(out, "✗")
    assert failed[0].startswith("✗ queue ecs-events: NetWorkException") and "timed out" in failed[0], out
    assert "fix: nothing answered at [mns] endpoint" in out
    assert "not tried: the endpoint did not answer" in out  # the rest is not blamed on anything else
    assert not any(line.rstrip().endswith("…") for line in failed), out  # whole messages


def test_an_unusable_state_dir_fails_check_config_doctor_and_run_alike(tmp_path, emulator):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = write_config(tmp_path, emulator, state_dir=blocker / "state")
    said = set()
    for command in ("check-config", "doctor", "run"):
        proc = cli(command, "-c", cfg, timeout=60)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        error = [line for line in proc.stderr.splitlines() if line.startswith("ecs-worker: error:")]
        assert error and "[worker] state_dir" in error[0] and "cannot be created" in error[0], proc.stderr
        said.add(error[0])
    assert len(said) == 1, said  # the same words from all three


def test_a_clean_doctor_counts_what_it_could_not_prove(tmp_path, emulator):
    cfg = write_config(tmp_path, emulator)
    assert cli("setup", "-c", cfg).returncode == 0
    proc = cli("doctor", "-c", cfg)
    out = proc.stdout
    assert proc.returncode == 0 and not lines(out, "✗"), out  # – lines are reported, not failures
    unproven = lines(out, "–")
    assert unproven, out  # e.g. the SLB writes: CLB has no dry run
    assert out.strip().splitlines()[-1].endswith(f"{len(unproven)} not provable, {len(lines(out, '✗'))} failed")
    assert "✓ state_dir" in out and "✓ [mns] endpoint" in out  # the start-up checks, as lines
    assert "all checks passed" not in out


def test_doctor_piped_into_head_leaves_no_traceback(tmp_path, emulator):
    cfg = write_config(tmp_path, emulator)
    proc = subprocess.run(f"{sys.executable} -m ecs_worker doctor -c {cfg} | head -1", shell=True,
                          capture_output=True, text=True, timeout=60)
    assert len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
