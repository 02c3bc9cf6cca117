"""The docs stay in step with the code: the hook reference is hookspecs.py's docstrings."""
import inspect
import re
from pathlib import Path

from ecs_worker.plugin_host import hookspecs

ROOT = Path(__file__).resolve().parent.parent


def hook_specs():
    return [(name, fn) for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, "ecs_worker_spec")]


def hook_reference() -> str:
    """The reference section exactly as docs/plugins.md must carry it."""
    blocks = []
    for name, fn in sorted(hook_specs(), key=lambda item: inspect.getsourcelines(item[1])[1]):
        signature = re.sub(r"'|\"", "", str(inspect.signature(fn)))
        blocks.append(f"### `{name}{signature}`\n\n{inspect.getdoc(fn)}\n")
    return "\n".join(blocks)


def test_plugins_doc_carries_every_hook_exactly_as_hookspecs_documents_it():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    expected = hook_reference()
    assert expected in doc, "docs/plugins.md is out of date; its reference section must be:\n" + expected


def test_every_hook_is_documented_and_typed():
    for name, fn in hook_specs():
        assert inspect.getdoc(fn), f"{name} has no docstring"
        assert all(p.annotation is not inspect.Parameter.empty
                   for p in inspect.signature(fn).parameters.values()), f"{name} is not typed"


def test_every_config_key_is_in_the_example_config():
    from ecs_worker.config import SECTIONS
    from dataclasses import fields
    text = (ROOT / "config.example.toml").read_text()
    for section, cls in SECTIONS.items():
        assert f"[{section}]" in text
        for f in fields(cls):
            assert re.search(rf"^{f.name} = ", text, re.M), f"[{section}] {f.name} missing"


def test_the_plugin_tutorial_works_as_written(tmp_path):
    """docs/plugins.md: the plugin, its test with the kit, and the replay, run as a user would."""
    import json
    import subprocess
    import sys

    doc = (ROOT / "docs" / "plugins.md").read_text()
    plugin, test = re.findall(r"```python\n(.*?)```", doc, re.S)[:2]
    (tmp_path / "maintenance_notes.py").write_text(plugin)
    (tmp_path / "test_notes.py").write_text(test)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_notes.py"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    (tmp_path / "try.toml").write_text('[plugins]\nload = ["./maintenance_notes.py"]\n'
                                       'disabled = ["restart", "slb", "maintenance", "webhook", "hello"]\n')
    events = sorted(str(p) for p in (ROOT / "examples" / "events").glob("*.json"))
    replay = subprocess.run([sys.executable, "-m", "ecs_worker", "replay", "-c", "try.toml", *events,
                             "--dry-run", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    rows = {r["name"]: r for r in map(json.loads, replay.stdout.splitlines())}
    assert rows["Instance:SystemMaintenance.Reboot:Scheduled"]["outcome"] == "handled"
