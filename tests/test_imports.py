"""The shape of the house: no minidt module imports another in a loop, and no file is too long to read in a sitting.

The import graph is read with ast from the source, every import statement counted wherever it stands (module
level, inside a function, under `if TYPE_CHECKING:`): a function-level import hides a cycle from Python, not from a
reader. `from .pkg import name` is an edge to the submodule pkg.name when there is one, else to pkg (its
__init__). A package's __init__ that a submodule runs first is not an edge: every module would be in a loop with
its package.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "minidt"
MAX_LINES = 450
LONG_ALLOWED = {"coursework/sandbox.py"}  # the grader's sandbox: one threat model, read as a whole


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The minidt modules that the file `path` (module `name`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, nodes colored white/grey/black)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_reader_sees_function_level_imports_and_cycles():
    graph = import_graph()
    assert "minidt.checkpoint" in graph["minidt.model"]  # from .checkpoint import load_into, inside a method
    assert "minidt.validate" in graph["minidt.model"]  # from . import validate: the submodule, not the package
    assert "minidt.data" in graph["minidt.train"]  # from .data import load_dataset: the package's __init__
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_file_is_too_long_to_read_in_a_sitting():
    lengths = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    long = {f: n for f, n in lengths.items() if n > MAX_LINES and f not in LONG_ALLOWED}
    assert not long, f"over {MAX_LINES} lines: {long}"
