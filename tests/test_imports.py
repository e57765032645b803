"""The package's shape: every module imports on its own, no import cycles, no source file over 400 lines."""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys

import pytest
from conftest import REPO

import kdistill

SRC = REPO / "src"
MAX_LINES = 400


def package_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(kdistill.__path__, "kdistill."))


ISOLATED = """
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "kdistill" or m.startswith("kdistill.")]:
        del sys.modules[loaded]  # each module starts from nothing of kdistill (torch stays loaded: speed)
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=-3)
print(json.dumps(failures))
"""


@pytest.mark.slow
def test_every_module_imports_in_isolation():
    """Each module imported first, in an interpreter holding no kdistill module (a fresh one for the first)."""
    modules = ["kdistill", *package_modules()]
    assert len(modules) > 40
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", ISOLATED, json.dumps(modules)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, "\n".join(f"{name}:\n{trace}" for name, trace in failures.items())


def _module_of(path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path, module: str) -> set[str]:
    """kdistill modules imported when `module` is imported (not inside functions or TYPE_CHECKING)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(nodes) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)

    visit(ast.parse(path.read_text()).body)
    return {name for name in found if name == "kdistill" or name.startswith("kdistill.")}


def import_graph() -> dict[str, set[str]]:
    """module -> the kdistill modules (and the packages above them) its import runs, ignoring its own parents."""
    files = {_module_of(p): p for p in (SRC / "kdistill").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        edges = set()
        for name in _top_level_imports(path, module):
            parts = name.split(".")
            # importing a.b.c runs a, a.b and a.b.c (names that are attributes, not modules, drop out)
            edges |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in files}
        # a module's own parent packages are already importing when it runs (Python's normal order), and the
        # root package `kdistill` is the public facade that imports the rest
        graph[module] = edges - ancestors - {module, "kdistill"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)) is not None:
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)) is not None:
            return cycle
    return None


def test_no_import_cycles_between_modules():
    """Module-level imports form no cycle (engine <-> methods, experiment <-> report, ... stay broken)."""
    graph = import_graph()
    assert "kdistill.collectives" in graph["kdistill.methods.contrastive"]
    assert not any(m.startswith("kdistill.engine") for m in graph["kdistill.methods.contrastive"])
    assert "kdistill.experiment" not in graph["kdistill.report"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_source_file_is_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in sorted(SRC.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these files (over {MAX_LINES} lines): {long}"


def test_methods_command_lists_mutual_in_a_fresh_interpreter():
    """`mutual` lives with its strategy, yet the registry lists it whatever was imported first."""
    env = {**os.environ, "COLUMNS": "250", "OMP_NUM_THREADS": "1"}
    listed = subprocess.run([sys.executable, "-m", "kdistill.cli", "methods"], capture_output=True, text=True,
                            timeout=120, env=env, cwd=REPO)
    assert listed.returncode == 0, listed.stderr
    assert "mutual" in listed.stdout and "Deep Mutual Learning" in listed.stdout
    code = ("import sys; from kdistill.methods import METHODS; "
            "assert 'kdistill.strategies.mutual' not in sys.modules; print('mutual' in METHODS, 'dml' in METHODS)")
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert probe.stdout.split() == ["True", "True"], probe.stderr
