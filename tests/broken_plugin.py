"""A third-party plugin "installed" without pip: a module plus a dist-info directory with an
`ecs_worker` entry point, on a directory that a subprocess gets through PYTHONPATH. It raises in
`on_startup`, as a broken package in the same environment would."""
from __future__ import annotations

import os
from pathlib import Path

MODULE = '''
from ecs_worker import hookimpl

@hookimpl
def on_startup(ctx):
    raise RuntimeError("broken third-party plugin")

@hookimpl
def on_event(event, ctx):
    return "should never run"
'''


def install(root: Path) -> dict:
    """Write the fake distribution under `root`; return an environment that puts it on sys.path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ecs_worker_broken.py").write_text(MODULE)
    info = root / "ecs_worker_broken-9.9.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ecs-worker-broken\nVersion: 9.9.1\n")
    (info / "entry_points.txt").write_text("[ecs_worker]\nbroken = ecs_worker_broken\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return env
