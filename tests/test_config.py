"""Config: validated on load; every error names the file, section and key."""
import subprocess
import sys
from pathlib import Path

import pytest

from ecs_worker.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_matches_defaults():
    config = load_config(ROOT / "config.example.toml")
    assert config.mns.wait_seconds == 20 and config.mns.batch_size == 16
    assert config.worker.concurrency == 8 and config.worker.dry_run is False
    assert config.cloud.protocol == "https"


def test_defaults_without_a_file():
    config = load_config(None)
    assert config.worker.max_attempts == 5 and config.plugins.disabled == []


@pytest.mark.parametrize("text,expected", [
    ("[mns]\nwait_seconds = 31\n", "[mns] wait_seconds: must be between 1 and 30, got 31"),
    ("[mns]\nbatch_size = 0\n", "[mns] batch_size: must be between 1 and 16, got 0"),
    ("[worker]\nconcurrency = \"8\"\n", "[worker] concurrency: must be an integer, got a string"),
    ("[worker]\ndry_run = 1\n", "[worker] dry_run: must be a boolean, got an integer"),
    ("[worker]\nconcurency = 8\n", "[worker] concurency: unknown key"),
    ("[mnss]\nqueue = \"x\"\n", "unknown section [mnss]"),
    ("[cloud]\nprotocol = \"ftp\"\n", "[cloud] protocol: must be one of 'https', 'http', got 'ftp'"),
    ("[plugins]\ndisabled = \"log\"\n", "[plugins] disabled: must be a list, got a string"),
    ("[plugins]\ndisabled = [1]\n", "[plugins] disabled[0]: must be a string, got an integer"),
    ("[worker]\nconcurrency = 1.5\n", "[worker] concurrency: must be an integer, got a number"),
    ("[credentials]\naccess_key_id = \"AK\"\n", "access_key_secret or access_key_secret_file: required"),
    ("[plugins.nosuch]\nx = 1\n", "[plugins.nosuch]: no plugin named 'nosuch'"),
    ("[plugins.log]\nformat = \"xml\"\n", "[plugins.log] format: must be one of"),
    ("[plugins.log]\ncolour = true\n", "[plugins.log] colour: unknown key"),
    ("mns = 3\n", "'mns' must be a table"),
    ("[mns\n", "not valid TOML"),
])
def test_bad_config_exits_2_with_one_line_naming_file_section_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", "check-config", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and expected in lines[0]
    assert proc.stdout == ""


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")


def test_secret_never_shown_in_repr(tmp_path):
    path = write(tmp_path, '[credentials]\naccess_key_id = "AKID"\naccess_key_secret = "canary-S3cr3t"\n')
    config = load_config(path)
    assert "canary-S3cr3t" not in repr(config) and "canary-S3cr3t" not in str(config)


def test_check_config_ok(tmp_path):
    path = write(tmp_path, "[mns]\nendpoint = \"https://1.mns.cn-hangzhou.aliyuncs.com\"\n[worker]\nconcurrency = 4\n")
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", "check-config", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "OK" in proc.stdout


@pytest.mark.parametrize("text, expected", [
    ("", "[mns] endpoint: required"),
    ("[worker]\nconcurrency = 4\n", "[mns] endpoint: required"),
    ('[mns]\nendpoint = "1.mns.cn-hangzhou.aliyuncs.com"\n', "[mns] endpoint: must start with https://"),
    ('[mns]\nendpoint = "https://1.mns.cn-hangzhou.aliyuncs.com"\n[credentials]\naccess_key_id = "AK"\n'
     'access_key_secret_file = "/nonexistent/secret"\n', "access_key_secret_file: cannot read"),
])
def test_check_config_rejects_exactly_what_run_rejects(tmp_path, text, expected):
    path = write(tmp_path, text + f'[worker]\nstate_dir = "{tmp_path / "state"}"\n'
                 if "[worker]" not in text else text)
    outcomes = []
    for command in ("check-config", "run"):
        proc = subprocess.run([sys.executable, "-m", "ecs_worker", command, "-c", str(path)],
                              capture_output=True, text=True, timeout=60)
        outcomes.append((proc.returncode, proc.stderr.strip()))
    (check_code, check_err), (run_code, run_err) = outcomes
    assert check_code == run_code == 2, outcomes
    assert expected in check_err and check_err == run_err


HOSTILE_FILES = {
    "invalid UTF-8": (lambda p: p.write_bytes(b'[worker]\nconcurrency = 4\n# caf\xe9\n'), "not UTF-8 text (byte 30)"),
    "5,000-deep arrays": (lambda p: p.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n"), "nested too deeply"),
    "binary garbage": (lambda p: p.write_bytes(bytes(range(256)) * 8), "not valid TOML"),
    "a directory": (lambda p: p.mkdir(), "cannot read: Is a directory"),
    "huge": (lambda p: p.write_text("# padding\n" * 200_000), "over 1024 KiB: not a config file"),
    "a value with line breaks": (lambda p: p.write_text('[logging]\nlevel = "INFO\\nWARNING forged"\n'),
                                 "[logging] level: must be one of"),
    "a key with line breaks": (lambda p: p.write_text('[worker]\n"con\\ncurrency" = 1\n'),
                               "[worker] 'con\\ncurrency': unknown key"),
}


@pytest.mark.parametrize("command", ["check-config", "run"])
@pytest.mark.parametrize("make,expected", HOSTILE_FILES.values(), ids=HOSTILE_FILES.keys())
def test_hostile_config_files_exit_2_with_one_line_naming_the_file(tmp_path, make, expected, command):
    path = tmp_path / "config.toml"
    make(path)
    proc = subprocess.run([sys.executable, "-m", "ecs_worker", command, "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 600, proc.stderr
    assert str(path) in lines[0] and expected in lines[0]


def test_an_unreadable_config_file_is_a_one_line_error(tmp_path):
    # /proc/self/mem opens but cannot be read from offset 0 (EIO), even as root.
    with pytest.raises(ConfigError, match=r"^/proc/self/mem: cannot read: Input/output error$"):
        load_config("/proc/self/mem")
    path = tmp_path / "secret.toml"
    path.write_text("[worker]\n")
    path.chmod(0)
    try:
        readable = open(path, "rb")  # root reads anything: nothing to test then
        readable.close()
    except PermissionError:
        with pytest.raises(ConfigError, match="cannot read: Permission denied"):
            load_config(path)


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

TOML_BITS = st.sampled_from(["[worker]\n", "[plugins]\n", "[plugins.log]\n", "[[x]]\n", "concurrency = ",
                             "format = ", "load = ", "a.b.c = ", "\"k\\n\" = ", "1", "1.5", "nan", "true",
                             "\"s\"", "'''\n", "[", "]", "{", "}", ",", "\n", "# c\n", "\xff", "\x00", "=",
                             "\ud800", "1979-05-27T07:32:00Z"])


@settings(derandomize=True, deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | st.lists(TOML_BITS, max_size=30).map(
    lambda bits: "".join(bits).encode("utf-8", "surrogatepass")))
def test_any_file_content_is_a_config_or_a_one_line_config_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("any") / "config.toml"
    path.write_bytes(content)
    try:
        load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message and len(message) <= 500
