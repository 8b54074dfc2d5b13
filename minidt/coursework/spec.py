"""What an assignment is: its functions (reference, signature, student docstring), its units of checks, what a
graded file may import, and the source of the file a student starts from (skeleton) or an instructor reads
(solution).

The reference of a function is the function of that name in the assignment's module: either the library's own
layer function re-exported (the solution *is* minidt's code) or, where the library has no pure function pair of
that shape, one written in the assignment module. Either way the solution file is generated from the reference's
source text, so it cannot drift from what the grader compares against.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

HEADER = "# minidt assignment: "


@dataclass(frozen=True)
class Function:
    """A function the student writes. `doc` is the docstring of the skeleton: shapes and the math."""

    name: str
    doc: str


# backend -> weight: each check's points on it are multiplied by it. NumPy alone by default: the points are for the
# math. A course that teaches the Array API (tutorial 01 does) adds the strict backend, which grades portable code.
DEFAULT_BACKENDS = {"numpy": 1}
PORTABLE = {"numpy": 1, "strict": 1}  # --backends numpy,strict


@dataclass
class Assignment:
    name: str
    number: int
    title: str
    intro: str  # the module docstring's body: what the assignment is about, the math shared by its functions
    preamble: str  # imports and constants the functions use (the same in skeleton and solution)
    functions: tuple[Function, ...]
    module: str  # dotted name of the module holding the reference functions
    units: tuple[Any, ...] = field(default=())  # checks.Pair and the like: .functions, .draw, .kinds(), .plan, .judge

    def reference(self) -> ModuleType:
        return importlib.import_module(self.module)

    def reference_function(self, name: str) -> Callable:
        return getattr(self.reference(), name)

    def parameters(self, name: str) -> tuple[str, ...]:
        """The parameter names the student's function must have, in order."""
        return tuple(inspect.signature(self.reference_function(name)).parameters)

    def checks(self, backends: dict[str, int] = DEFAULT_BACKENDS) -> list[tuple[str, int]]:
        """(name, points) of every check, in the order they are graded and reported."""
        return [(f"{kind.label} [{b}]", kind.points * weight) for unit in self.units
                for b, weight in backends.items() for kind in unit.kinds()]

    def max_score(self, backends: dict[str, int] = DEFAULT_BACKENDS) -> int:
        return sum(points for _, points in self.checks(backends))

    def imports(self) -> dict[str, tuple[str, ...]]:
        """{minidt module: names} the preamble imports: what a graded file may import from minidt."""
        found = {"minidt.backend": ()}
        for node in ast.walk(ast.parse(textwrap.dedent(self.preamble))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("minidt."):
                found[node.module] = tuple(alias.name for alias in node.names)
        return found

    def helpers(self, unit: Any) -> tuple[str, ...]:
        """The assignment's other functions that the unit's reference functions call: while the unit is graded,
        the reference's versions replace the student's (one wrong helper costs its own checks only)."""
        names = {f.name for f in self.functions} - set(unit.functions)
        used = {n for fn in unit.functions for n in self.reference_function(fn).__code__.co_names}
        return tuple(f.name for f in self.functions if f.name in names & used)

    def helper_source(self, names: tuple[str, ...]) -> str:
        """The preamble and the reference solutions of `names`: the module the helpers are taken from."""
        doc = {f.name: f.doc for f in self.functions}
        return "\n\n".join([textwrap.dedent(self.preamble).strip() + "\n"] + [
            function_source(self.reference_function(n), n, doc[n], solution=True) for n in names])

    def source(self, solution: bool = False) -> str:
        """The text of NAME.py: the skeleton (bodies raise NotImplementedError) or the reference solution."""
        kind = "reference solution" if solution else "skeleton"
        intro = textwrap.dedent(self.intro).strip()
        allowed = ", ".join(self.imports())
        parts = [
            f"{HEADER}{self.name}\n"
            f'"""minidt assignment {self.number}: {self.title} ({kind}).\n\n{intro}\n\n'
            + textwrap.fill("The prompts above are for your own derivation, on paper; nobody collects them. The "
                            "function whose docstring starts with 'Question' is the written part that is graded: "
                            "its answer, as a function the grader evaluates.", 114) + "\n\n"
            "Each docstring gives the shapes and the math. Grade your file with\n\n"
            f"    minidt grade {self.name}.py\n\n"
            + textwrap.fill(
                "which runs each function on inputs drawn by hypothesis: outputs against the reference solution, "
                "gradients against central finite differences (float64) and against the reference, on NumPy; with "
                "--backends numpy,strict (a course that grades portable code) also on the strict Array API backend, "
                "which refuses what a GPU would: use only the namespace of your inputs (xp = array_namespace(x)) and "
                "the Array API standard on it, no NumPy calls on the arrays, device=device(x) for every array you "
                "make. Never write into an argument (x -= mean changes the caller's x): the grader checks. A "
                "backward is graded on the reference forward's cache, so a mistake in a forward costs that "
                "forward's points only: return the cache exactly as the forward's docstring lays it out. Your "
                f"file runs in a separate process that may import, of minidt, only {allowed} (the rest of minidt is the reference "
                "solution); a function that calls another of this file's functions is graded with the reference's "
                "version of that one, so each mistake costs its own points only.", 114) + "\n"
            '"""\n\n'
            "from __future__ import annotations\n\n"
            + textwrap.dedent(self.preamble).strip() + "\n"
        ]
        for f in self.functions:
            parts.append(function_source(self.reference_function(f.name), f.name, f.doc, solution))
        return "\n\n".join(parts)


def function_source(fn: Callable, name: str, doc: str, solution: bool) -> str:
    """`def` line(s) of the reference as written, the student docstring, then the reference body (solution) or
    `raise NotImplementedError` (skeleton)."""
    lines = textwrap.dedent(inspect.getsource(fn)).splitlines()
    node = ast.parse("\n".join(lines)).body[0]
    if not isinstance(node, ast.FunctionDef) or node.name != name:
        raise ValueError(f"reference of {name}: expected a plain function named {name}, got {fn!r}")
    first = node.body[0]
    has_doc = (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
               and isinstance(first.value.value, str))
    header_end = first.lineno - 1  # 1-based line of the last header line, before comments ahead of the body
    while header_end > node.lineno and (not lines[header_end - 1].strip()
                                        or lines[header_end - 1].strip().startswith("#")):
        header_end -= 1
    start = first.end_lineno if has_doc else header_end
    gpu = set()  # 0-based lines of the kernel dispatch, and the blank line after each
    for stmt in filter(_is_kernel_dispatch, node.body):
        gpu |= set(range(stmt.lineno - 1, stmt.end_lineno))
        if stmt.end_lineno < len(lines) and not lines[stmt.end_lineno].strip():
            gpu.add(stmt.end_lineno)
    body = [line for i, line in enumerate(lines[start:], start) if i not in gpu]
    while body and not body[0].strip():
        body = body[1:]
    out = lines[node.lineno - 1:header_end] + [_docstring(doc)]
    if solution:
        out += body
    else:
        n = sum(1 for line in body if line.strip() and not line.strip().startswith("#"))
        out += [f"    # your code here (the reference solution takes {n} line{'s' if n != 1 else ''})",
                "    raise NotImplementedError"]
    return "\n".join(out) + "\n"


def _is_kernel_dispatch(stmt: ast.stmt) -> bool:
    """`if kernel_path(x) ...: return <the kernel's result>`: the GPU path's branch at the top of a layer function
    (minidt/kernels), left out of the files students get, which hold the textbook, the twin."""
    return isinstance(stmt, ast.If) and "kernel_path(" in ast.unparse(stmt.test)


def _docstring(doc: str) -> str:
    text = inspect.cleandoc(doc)
    if "\n" not in text:
        return f'    """{text}"""'
    return '    """' + textwrap.indent(text, "    ").lstrip() + '\n    """'
