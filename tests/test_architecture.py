"""The import rules of docs/architecture.md, checked from the source with `ast` so they stay true.

Every import counts — module level and inside functions — except those under
`if TYPE_CHECKING:` (they never run). Relative imports are resolved; `from X import Y` is an
edge to the module X.Y when that is a module, else to X. Importing a submodule does not count
as importing its package's __init__ (as import-linter and pydeps read it).

Each rule is a function over an import graph; the `*_can_fail` tests feed it a small synthetic
tree that breaks the rule, so a rule that could never fail would show here.
"""
from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The installed names of the source folders (pyproject.toml [tool.setuptools] package-dir).
SOURCES = {"ecs_worker": ROOT / "worker", "ecs_worker.plugins": ROOT / "plugins"}

EMULATOR_SIDE = ("ecs_worker.emulator", "ecs_worker.testing", "ecs_worker.demo")  # and their submodules
EMULATOR_COMMANDS = "ecs_worker.cli"  # may load the emulator side, but only inside a function (a command)
PUBLIC_API = "ecs_worker"             # the package itself: what ecs_worker/__init__.py exports
PLUGINS = "ecs_worker.plugins"
EVENTS = "ecs_worker.events"
# What "transport" means for the events model: how messages travel and how the cloud is called.
TRANSPORT_INTERNAL = ("ecs_worker.queue", "ecs_worker.cloud", "ecs_worker.emulator", "ecs_worker.consumer",
                      "ecs_worker.state")
TRANSPORT_EXTERNAL = ("mns", "aliyunsdkcore", "aliyunsdkecs", "aliyunsdkslb", "alibabacloud_credentials",
                      "alibabacloud_tea_openapi", "http", "urllib", "socket", "requests", "ssl")


@dataclass(frozen=True)
class Import:
    target: str          # the module imported (absolute, resolved)
    line: int
    in_function: bool    # inside a def (runs only when called)


def within(name: str, prefixes) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# ---------------------------------------------------------------------------------- the graph


def module_files(sources: dict[str, Path]) -> dict[str, Path]:
    """Module name -> file, for every .py under each source folder (a package's __init__ is the package)."""
    out = {}
    for package, folder in sources.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            if name not in out:  # a nested source folder (plugins/) names its own modules
                out[name] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
           (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, in_function: bool = False):
    """(node, in_function) for every import, skipping the bodies of `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), in_function)
        else:
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _imports(node, inner)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node, in_function in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [Import(alias.name, node.lineno, in_function) for alias in node.names]
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            out.append(Import(sub if sub in modules else base, node.lineno, in_function))
    return out


def build_graph(sources: dict[str, Path]) -> dict[str, list[Import]]:
    modules = module_files(sources)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def internal(graph: dict[str, list[Import]], name: str) -> str | None:
    """The module of the graph an import target names (itself, or the package of `pkg.attr`)."""
    while name and name not in graph:
        name = name.rpartition(".")[0]
    return name or None


def closure(graph: dict[str, list[Import]], start: str, follow=lambda src, imp: True) -> dict[str, list[str]]:
    """Every module reachable from `start` (internal and external), with one import chain to each."""
    chains = {start: [start]}
    todo = [start]
    while todo:
        src = todo.pop()
        for imp in graph.get(src, ()):
            if not follow(src, imp):
                continue
            dst = internal(graph, imp.target) or imp.target
            if dst not in chains:
                chains[dst] = chains[src] + [dst]
                if dst in graph:
                    todo.append(dst)
    return chains


# ---------------------------------------------------------------------------------- the rules


def events_know_no_transport(graph) -> list[str]:
    """The events model reaches no queue, no cloud client, no network module, however indirectly."""
    problems = []
    for dst, chain in closure(graph, EVENTS).items():
        if within(dst, TRANSPORT_INTERNAL) or within(dst, TRANSPORT_EXTERNAL):
            problems.append(" -> ".join(chain))
    return problems


def plugins_only_through_the_public_api(graph) -> list[str]:
    """A plugin imports, of this project, only `ecs_worker` (the public API) and the plugin package."""
    problems = []
    for name, imports in graph.items():
        if not within(name, PLUGINS):
            continue
        for imp in imports:
            if within(imp.target, "ecs_worker") and imp.target != PUBLIC_API and not within(imp.target, PLUGINS):
                problems.append(f"{name}:{imp.line} imports {imp.target}")
    return list(dict.fromkeys(problems))  # one line per import statement


def run_path_never_imports_the_emulator(graph) -> list[str]:
    """No module but the emulator side itself reaches the emulator side — except the CLI, which
    may load it inside a function (the `emulator` and `demo` commands), never at import."""
    def follow(src: str, imp: Import) -> bool:
        return not (src == EMULATOR_COMMANDS and imp.in_function and within(imp.target, EMULATOR_SIDE))

    problems = []
    for name in graph:
        if within(name, EMULATOR_SIDE):
            continue
        for dst, chain in closure(graph, name, follow).items():
            if within(dst, EMULATOR_SIDE):
                problems.append(" -> ".join(chain))
                break
    return problems


def import_cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself)."""
    edges = {name: sorted({m for m in (internal(graph, i.target) for i in imports) if m})
             for name, imports in graph.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges[v]:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


# ---------------------------------------------------------------------------------- the project


@pytest.fixture(scope="module")
def graph():
    return build_graph(SOURCES)


def test_the_graph_sees_the_project(graph):
    """Guards the checks below against vacuous truth: the modules and edges they reason about exist."""
    for name in (EVENTS, "ecs_worker.cli", "ecs_worker.consumer.loop", "ecs_worker.emulator", "ecs_worker.testing",
                 "ecs_worker.demo", "ecs_worker.plugins.restart"):
        assert name in graph, name
    assert any(within(i.target, "ecs_worker.emulator") and i.in_function for i in graph["ecs_worker.cli"])
    assert any(within(i.target, PLUGINS) or within(i.target, "ecs_worker") for i in graph["ecs_worker.plugins.restart"])


def test_events_know_no_transport(graph):
    assert events_know_no_transport(graph) == []


def test_plugins_only_through_the_public_api(graph):
    assert plugins_only_through_the_public_api(graph) == []


def test_nothing_on_the_run_path_imports_the_emulator(graph):
    assert run_path_never_imports_the_emulator(graph) == []


def test_no_import_cycles(graph):
    assert import_cycles(graph) == []


# ---------------------------------------------------------------------------------- the diagram

DOC = ROOT / "docs" / "architecture.md"
LEAVES = "leaves"  # the part anybody may import, which imports nothing of ours


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the first Markdown table after `heading`, header and rule skipped."""
    section = text.split(heading, 1)[1]
    rows, started = [], False
    for line in section.splitlines():
        if line.startswith("|"):
            started = True
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif started:
            break
    return rows[2:]


def diagram(text: str) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """The doc's parts (part -> its places: `folder/` or `module.py`) and arrows (part -> parts)."""
    parts = {row[0]: re.findall(r"`([^`]+)`", row[1]) for row in _table(text, "## The parts")}
    arrows = {row[0]: {p.strip() for p in row[1].split(",") if p.strip()} for row in _table(text, "## The arrows")}
    return parts, arrows


def part_of(module: str, parts: dict[str, list[str]]) -> str | None:
    """The part a module belongs to: the longest place that names it (a folder names its tree)."""
    best, length = None, -1
    for part, places in parts.items():
        for place in places:
            root = "ecs_worker.plugins" if place.startswith("plugins/") else "ecs_worker"
            rel = place.removeprefix("plugins/") if place.startswith("plugins/") else place
            if rel.endswith("/") or rel == "":
                name = ".".join([root, *rel.strip("/").split("/")]) if rel.strip("/") else root
                hit = within(module, name)
            else:
                stem = rel.removesuffix(".py").replace("/", ".")
                name = root if stem == "__init__" else f"{root}.{stem}"
                hit = module == name
            if hit and len(name) > length:
                best, length = part, len(name)
    return best


def diagram_problems(graph, parts, arrows) -> list[str]:
    """Modules no part names, imports no arrow allows, leaves that import us, arrows nothing uses."""
    problems, used = [], set()
    for name in graph:
        if part_of(name, parts) is None:
            problems.append(f"{name} is in no part of the parts table")
    for name, imports in graph.items():
        src = part_of(name, parts)
        for imp in imports:
            target = internal(graph, imp.target)
            dst = target and part_of(target, parts)
            if not dst or dst == src or src is None:
                continue
            if src == LEAVES:
                problems.append(f"{name}:{imp.line} imports {target}: a leaf imports nothing of ours")
            elif dst != LEAVES and dst not in arrows.get(src, set()):
                problems.append(f"{name}:{imp.line} imports {target}: no arrow {src} -> {dst}")
            else:
                used.add((src, dst))
    for src, dsts in arrows.items():
        problems += [f"arrow {src} -> {dst} is used by no import" for dst in sorted(dsts) if (src, dst) not in used]
    return list(dict.fromkeys(problems))


def test_the_code_follows_the_documented_diagram(graph):
    parts, arrows = diagram(DOC.read_text(encoding="utf-8"))
    assert set(arrows) == set(parts) - {LEAVES}, "every part but the leaves has a row of arrows"
    assert diagram_problems(graph, parts, arrows) == []


MAX_MODULE_LINES = 300  # a module longer than this does more than one job: split it by job


def long_modules(*roots: Path) -> list[str]:
    """Every module under `roots` over MAX_MODULE_LINES lines, with its length."""
    found = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_MODULE_LINES:
                found.append(f"{path.relative_to(ROOT)}: {lines} lines")
    return found


def test_no_module_of_the_worker_or_the_plugins_is_over_300_lines():
    assert long_modules(ROOT / "worker", ROOT / "plugins") == []


def test_a_long_module_is_noticed(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "ROOT", tmp_path)  # long_modules names paths from ROOT
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "short.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    (tmp_path / "pkg" / "long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert long_modules(tmp_path / "pkg") == [f"pkg/long.py: {MAX_MODULE_LINES + 1} lines"]


def test_the_top_of_the_package_is_only_its_face():
    top = sorted(p.name for p in (ROOT / "worker").glob("*.py"))
    assert len(top) <= 10, top


DIAGRAM = """
## The parts

| Part | Where | Its one job |
|---|---|---|
| command line | `cli.py` | x |
| leaves | `text.py` | x |
| consumer | `consumer/` | x |
| queue | `queue/` | x |
| public API | `__init__.py` | x |
| built-in plugins | `plugins/` | x |

## The arrows

| Part | May import |
|---|---|
| command line | consumer |
| consumer | queue |
| queue | |
| public API | |
| built-in plugins | |
"""


def test_the_diagram_rule_can_fail(tmp_path):
    parts, arrows = diagram(DIAGRAM)
    files = {"worker/cli.py": "from .consumer import loop\n", "worker/text.py": "",
             "worker/consumer/__init__.py": "", "worker/consumer/loop.py": "from ..queue import source\n",
             "worker/queue/__init__.py": "", "worker/queue/source.py": "from ..text import one_line\n"}
    assert diagram_problems(synthetic(tmp_path, files), parts, arrows) == []
    broken = {**files, "worker/queue/source.py": "def f():\n    from ..consumer import loop\n",  # against the arrows
              "worker/text.py": "from . import cli\n",  # a leaf importing us
              "worker/consumer/loop.py": "",  # its arrow left unused
              "worker/stray.py": ""}  # in no part
    assert diagram_problems(synthetic(tmp_path, broken), parts, arrows) == [
        "ecs_worker.stray is in no part of the parts table",
        "ecs_worker.queue.source:2 imports ecs_worker.consumer.loop: no arrow queue -> consumer",
        "ecs_worker.text:1 imports ecs_worker.cli: a leaf imports nothing of ours",
        "arrow consumer -> queue is used by no import"]


# ---------------------------------------------------------------------------------- each rule can fail


def synthetic(tmp_path: Path, files: dict[str, str]) -> dict[str, list[Import]]:
    """A made-up `ecs_worker` tree (path -> source) with a plugins/ folder, as the project's; a fresh
    folder each call."""
    tmp_path = tmp_path / f"tree{len(list(tmp_path.iterdir()))}"
    for rel, text in {"worker/__init__.py": "", "plugins/__init__.py": "", **files}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return build_graph({"ecs_worker": tmp_path / "worker", "ecs_worker.plugins": tmp_path / "plugins"})


def test_events_rule_can_fail(tmp_path):
    g = synthetic(tmp_path, {
        "worker/events.py": "from .keys import key\n",
        "worker/keys.py": "def key():\n    from .queue.source import Message\n",  # indirect, in a function
        "worker/queue/__init__.py": "", "worker/queue/source.py": "import mns\n"})
    assert events_know_no_transport(g) == ["ecs_worker.events -> ecs_worker.keys -> ecs_worker.queue.source",
                                           "ecs_worker.events -> ecs_worker.keys -> ecs_worker.queue.source -> mns"]
    g = synthetic(tmp_path, {"worker/events.py": "import urllib.request\n", "worker/keys.py": "",
                             "worker/queue/source.py": ""})
    assert events_know_no_transport(g) == ["ecs_worker.events -> urllib.request"]


def test_events_rule_ignores_type_checking_imports(tmp_path):
    g = synthetic(tmp_path, {"worker/events.py": """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from .queue.source import Message
        else:
            import json
        """, "worker/queue/__init__.py": "", "worker/queue/source.py": ""})
    assert events_know_no_transport(g) == []
    assert [i.target for i in g[EVENTS]] == ["typing", "json"]


def test_plugin_rule_can_fail(tmp_path):
    g = synthetic(tmp_path, {
        "plugins/good.py": "from ecs_worker import hookimpl\nfrom .shared import helper\nfrom .. import Event\n",
        "plugins/shared.py": "",
        "plugins/bad.py": "from ..cloud.batch import KeyedBatcher\n\ndef f():\n    import ecs_worker.runner\n",
        "worker/cloud/__init__.py": "", "worker/cloud/batch.py": "", "worker/runner.py": ""})
    assert plugins_only_through_the_public_api(g) == ["ecs_worker.plugins.bad:1 imports ecs_worker.cloud.batch",
                                                      "ecs_worker.plugins.bad:4 imports ecs_worker.runner"]


def test_emulator_rule_can_fail(tmp_path):
    files = {"worker/emulator/__init__.py": "", "worker/emulator/cli.py": "",
             "worker/testing.py": "from .emulator import Emulator\n", "worker/demo.py": "from . import testing\n",
             "worker/cli.py": "def cmd_emulator():\n    from .emulator.cli import main\n",
             "worker/__main__.py": "from .cli import main\n"}
    assert run_path_never_imports_the_emulator(synthetic(tmp_path, files)) == []  # the sanctioned ways
    g = synthetic(tmp_path, {**files, "worker/runner.py": "def main():\n    from .helpers import go\n",
                             "worker/helpers.py": "from ecs_worker.testing import run_emulator\n"})
    assert run_path_never_imports_the_emulator(g) == ["ecs_worker.helpers -> ecs_worker.testing",
                                                      "ecs_worker.runner -> ecs_worker.helpers -> ecs_worker.testing"]
    g = synthetic(tmp_path, {**files, "worker/cli.py": "from .emulator.cli import main\n"})  # at import time
    assert "ecs_worker.__main__ -> ecs_worker.cli -> ecs_worker.emulator.cli" in run_path_never_imports_the_emulator(g)


def test_cycle_rule_can_fail(tmp_path):
    g = synthetic(tmp_path, {"worker/cli.py": "from .runner import main\n",
                             "worker/runner.py": "def main():\n    from .cli import _setup\n",
                             "worker/app.py": "from . import cli\n", "worker/me.py": "from . import me\n"})
    assert import_cycles(g) == [["ecs_worker.cli", "ecs_worker.runner"], ["ecs_worker.me"]]
    g = synthetic(tmp_path, {"worker/runner.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                                 "    from .cli import Args\n", "worker/me.py": ""})
    assert import_cycles(g) == []
