"""The package's modules import one another one way: no cycle, function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import jfe

PACKAGE_ROOT = Path(jfe.__file__).resolve().parent


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under ``root``."""
    names = {}
    for path in root.rglob("*.py"):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def explicit_imports(module: str, path: Path, modules: dict[str, Path], package: str) -> set[str]:
    """The package's modules that ``module`` names in an import statement, anywhere in the file.

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``. A
    package's ``__init__`` reached by a module inside that package does not count: Python runs it
    before the module, so it can never wait on it.
    """
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            named = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            named = [
                f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix for alias in node.names
            ]
        else:
            continue
        for name in named:
            if name != package and not name.startswith(package + "."):
                continue
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name != module and not module.startswith(name + "."):
                targets.add(name)
    return targets


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = module_names(root, package)
    return {name: explicit_imports(name, path, modules, package) for name, path in modules.items()}


def test_jfe_has_no_import_cycle():
    graph = import_graph(PACKAGE_ROOT, "jfe")
    assert len(graph) > 30  # the walk found the package
    assert "jfe.train.finalize" in graph["jfe.export"]  # function-level and top-level imports are both seen
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_training_never_imports_export_or_the_commands():
    graph = import_graph(PACKAGE_ROOT, "jfe")
    reachable, todo = set(), ["jfe.train.trainer"]
    while todo:
        for nxt in graph[todo.pop()] - reachable:
            reachable.add(nxt)
            todo.append(nxt)
    assert not reachable & {"jfe.export", "jfe.card", "jfe.hub", "jfe.demo", "jfe.cli"}


def test_the_walk_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from toy.a import f\n")  # reaching the own package's __init__: not an edge
    (pkg / "a.py").write_text("import toy\n\ndef f():\n    from toy.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    graph = import_graph(pkg, "toy")
    assert graph["toy.a"] == {"toy.sub.b"} and graph["toy.sub.b"] == {"toy.a"}
    assert find_cycle(graph) == ["toy.a", "toy.sub.b", "toy.a"]
    (pkg / "sub" / "b.py").write_text("from toy import sub\n")
    assert find_cycle(import_graph(pkg, "toy")) is None
