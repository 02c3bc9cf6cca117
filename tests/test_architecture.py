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
