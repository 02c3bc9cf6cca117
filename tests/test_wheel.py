"""The release a stranger installs: the sdist and the wheel built from a copy of this tree (with
one plugin folder added, as a contributor would), the wheel installed into a fresh virtual
environment, and the commands and the test kit run from there — not from this checkout.

Offline: the build runs without isolation (setuptools and build come from the `test` extra), and
the fresh environment sees this environment's dependencies through a path file, while nothing
of this checkout's editable install (its import hooks live in `.pth` files a path entry does not
run) is importable there.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from ecs_worker.version import __version__

ROOT = Path(__file__).resolve().parent.parent
ADDED = "plugins/zz_added_by_test"  # a new plugin folder, named nowhere else


def run(*args, timeout=60, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel of this tree plus one new plugin folder (with a data file)."""
    tree = tmp_path_factory.mktemp("tree")
    files = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).stdout
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    (tree / ADDED).mkdir()
    (tree / ADDED / "__init__.py").write_text('"""A plugin folder no list names."""\n')
    (tree / ADDED / "table.json").write_text("{}\n")
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, tree, timeout=120)
    return out


def test_sdist_and_wheel_carry_every_package_and_data_file(dist):
    wheel = zipfile.ZipFile(next(dist.glob("ecs_worker-*.whl"))).namelist()
    for name in ("ecs_worker/emulator/default_state.json", "ecs_worker/plugins/lb/__init__.py",
                 "ecs_worker/plugins/zz_added_by_test/__init__.py", "ecs_worker/plugins/zz_added_by_test/table.json",
                 "ecs_worker/cloud/__init__.py", "ecs_worker/queue/source.py"):
        assert name in wheel, f"{name} missing from the wheel"
    # every package of the tree is in the wheel: no folder left out
    folders = {p.parent for p in ROOT.glob("worker/**/__init__.py")} | {p.parent for p in ROOT.glob("plugins/**/__init__.py")}
    for folder in folders:
        rel = folder.relative_to(ROOT)
        package = "ecs_worker/" + "/".join(rel.parts[1:]) if rel.parts[0] == "worker" else "ecs_worker/" + str(rel)
        assert f"{package.rstrip('/')}/__init__.py" in wheel, f"{rel} is not packaged"
    sdist = tarfile.open(next(dist.glob("ecs_worker-*.tar.gz"))).getnames()
    assert any(n.endswith("worker/emulator/default_state.json") for n in sdist)
    assert any(n.endswith(f"{ADDED}/table.json") for n in sdist)


@pytest.fixture(scope="module")
def fresh(dist, tmp_path_factory) -> Path:
    """A new venv with only the wheel (and the example plugin, from a copy outside the repo)."""
    home = tmp_path_factory.mktemp("fresh")
    venv = home / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "deps-from-the-test-env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index"]
    run(*pip, next(dist.glob("ecs_worker-*.whl")), timeout=120)
    plugin = home / "ecs-worker-hello"  # a plugin author's package, outside this repository
    shutil.copytree(ROOT / "examples" / "ecs-worker-hello", plugin,
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "build"))
    run(*pip, "--no-build-isolation", plugin, timeout=120)
    return venv


PROBE = """
import json, sys
from types import SimpleNamespace
from aliyunsdkecs.request.v20140526.DescribeInstancesRequest import DescribeInstancesRequest
from ecs_worker.testing import acs_client

info = json.loads(open(sys.argv[1]).read())
request = DescribeInstancesRequest()
request.set_endpoint(info["endpoint"])
client = acs_client(SimpleNamespace(**info))
print(json.loads(client.do_action_with_exception(request))["TotalCount"])
"""


def env_for(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["ECS_WORKER_LOAD_PLUGINS"] = "hello"
    return env


def test_installed_wheel_runs_every_first_hour_command(fresh, tmp_path):
    env, cli = env_for(fresh), fresh / "bin" / "ecs-worker"
    where = run(fresh / "bin" / "python", "-c", "import ecs_worker; print(ecs_worker.__file__)",
                cwd=tmp_path, env=env).stdout
    assert where.startswith(str(fresh)), where  # the wheel's copy, not this checkout
    assert "emulator" in run(cli, "--help", cwd=tmp_path, env=env).stdout
    assert run(cli, "--version", cwd=tmp_path, env=env).stdout.strip() == f"ecs-worker {__version__}"
    listed = {p["name"]: p for p in json.loads(run(cli, "plugins", "--json", cwd=tmp_path, env=env).stdout)}
    assert {"log", "restart", "slb", "maintenance", "webhook", "hello"} <= set(listed)
    assert listed["restart"]["location"].startswith(str(fresh))

    ready = tmp_path / "ready.json"
    emulator = subprocess.Popen([str(cli), "emulator", "--ready-file", str(ready)], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and emulator.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), emulator.stderr.read() if emulator.poll() is not None else "not ready in 20 s"
        info = json.loads(ready.read_text())
        probe = tmp_path / "probe.py"  # the real ECS SDK against the emulator the wheel serves
        probe.write_text(PROBE)
        count = int(run(fresh / "bin" / "python", probe, ready, cwd=tmp_path, env=env).stdout)
        assert count > 0, "the default state has a fleet"
    finally:
        emulator.terminate()
        emulator.wait(10)
    assert emulator.returncode == 0, info

    demo = run(cli, "demo", "--json", cwd=tmp_path, env=env, timeout=120)
    summary = json.loads(demo.stdout)
    assert summary["drained"] and summary["worker_exit_code"] == 0

    # the plugin author's tests, with the test kit's fixtures from the installed wheel
    tests = run(fresh / "bin" / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests",
                cwd=fresh.parent / "ecs-worker-hello", env=env, timeout=120)
    assert " passed" in tests.stdout and "failed" not in tests.stdout
