"""Grade a student's file: import it, check it has every function with the right signature, run every check.

A file that cannot be graded (syntax error, an import that fails, a missing function, a wrong signature) raises
UngradeableError with a one-line message; anything wrong inside a function only costs that check's points.
"""

from __future__ import annotations

import inspect
import itertools
import os
import re
import sys
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .spec import HEADER, Assignment

DEFAULT_MAX_EXAMPLES = 10
MAX_OUTPUT = 2000  # characters of failure output kept per check
_counter = itertools.count()
_DRAW = re.compile(r"Draw \d+(?: \((.*)\))?: (.*)")


class UngradeableError(ValueError):
    """The file cannot be graded at all; the message is one line."""


@dataclass
class Result:
    name: str
    score: int
    max_score: int
    output: str


def detect_assignment(path: "str | os.PathLike", assignments: dict[str, Assignment]) -> str:
    """The name in the file's `# minidt assignment: NAME` header line (within its first 5 lines)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        head = [line.strip() for line in itertools.islice(f, 5)]
    for line in head:
        if line.startswith(HEADER.strip()):
            name = line[len(HEADER.strip()):].strip()
            if name not in assignments:
                raise UngradeableError(f"{path}: header names assignment {name!r}, expected one of "
                                       f"{', '.join(assignments)}")
            return name
    raise UngradeableError(f"{path}: cannot tell which assignment this is: no '{HEADER}NAME' line at the top; "
                           f"pass --assignment NAME (one of {', '.join(assignments)})")


def load_student(path: "str | os.PathLike", assignment: Assignment) -> ModuleType:
    """Compile and import the file, then check every function of the assignment is there with its signature."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UngradeableError(f"{path}: cannot read it ({e})") from e
    try:
        code = compile(source, path, "exec")
    except SyntaxError as e:
        raise UngradeableError(f"{path}, line {e.lineno}: syntax error: {e.msg}") from e
    name = f"minidt_student_{assignment.name}_{next(_counter)}"
    module = ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module  # dataclasses and pickling look a module up by name while it executes
    try:
        exec(code, module.__dict__)
    except Exception as e:
        line = _student_line(e, path)
        raise UngradeableError(f"{path}{line}: importing it raised {type(e).__name__}: {e}") from e
    finally:
        sys.modules.pop(name, None)
    for f in assignment.functions:
        fn = getattr(module, f.name, None)
        if fn is None or not callable(fn):
            raise UngradeableError(f"{path}: missing function {f.name} (assignment {assignment.name} needs "
                                   f"{', '.join(g.name for g in assignment.functions)})")
        expected = assignment.parameters(f.name)
        try:
            got = tuple(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            got = ("?",)
        if got != expected:
            raise UngradeableError(f"{path}: wrong signature for {f.name}: expected ({', '.join(expected)}), "
                                   f"got ({', '.join(got)})")
    return module


def grade_module(module: Any, assignment: Assignment, max_examples: int = DEFAULT_MAX_EXAMPLES,
                 backends: tuple[str, ...] = ("numpy", "strict")) -> list[Result]:
    """Run every check; a failing check scores 0 and says why, and grading goes on."""
    if max_examples < 1:
        raise ValueError(f"max_examples: expected a positive integer, got {max_examples}")
    ref = assignment.reference()
    path = getattr(module, "__file__", None)
    results = []
    for check in assignment.checks(backends):
        try:
            check.run(module, ref, max_examples)
            results.append(Result(check.name, check.points, check.points, "passed"))
        except NotImplementedError as e:
            where = _student_frame(e, path)
            fn = f"{where.name} " if where is not None else ""
            results.append(Result(check.name, 0, check.points, f"not implemented: {fn}raises NotImplementedError"))
        except Exception as e:  # AssertionError from a comparison, or anything the student's code raised
            text = _describe(e, path)
            if check.name.endswith("[strict]") and not isinstance(e, AssertionError):
                text += ("\nhint: the strict backend rejects NumPy calls on its arrays and arrays made without "
                         "device=; use xp = array_namespace(x) and the Array API standard")
            results.append(Result(check.name, 0, check.points, text))
    return results


def grade_file(path: "str | os.PathLike", assignment: Assignment, max_examples: int = DEFAULT_MAX_EXAMPLES,
               backends: tuple[str, ...] = ("numpy", "strict")) -> list[Result]:
    return grade_module(load_student(path, assignment), assignment, max_examples, backends)


def _student_frame(e: BaseException, path: str | None) -> Any:
    if path is None:
        return None
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
    return frames[-1] if frames else None


def _student_line(e: BaseException, path: str) -> str:
    if isinstance(e, SyntaxError) and e.lineno:
        return f", line {e.lineno}"
    frame = _student_frame(e, path)
    return f", line {frame.lineno}" if frame is not None else ""


def _describe(e: BaseException, path: str | None) -> str:
    if isinstance(e, AssertionError):
        text = str(e) or "assertion failed"
    else:
        frame = _student_frame(e, path)
        where = f" (in {frame.name}, line {frame.lineno}: {frame.line})" if frame is not None else ""
        text = f"{type(e).__name__}: {e}{where}"
    draws = [m.groups() for n in getattr(e, "__notes__", []) if (m := _DRAW.match(n))]
    if draws:  # hypothesis' notes on the failing example: "Draw 2 (in_features): 3"
        text += "\ninputs drawn: " + ", ".join(f"{label or '?'} = {value}" for label, value in draws)
    return text if len(text) <= MAX_OUTPUT else text[:MAX_OUTPUT] + " ..."


def format_table(results: list[Result], title: str) -> str:
    """The per-check table, the failures' explanations, and the total."""
    width = max([len(r.name) for r in results] + [len("check")])
    lines = [title, f"{'check':<{width}}  points", f"{'-' * width}  ------"]
    for r in results:
        lines.append(f"{r.name:<{width}}  {r.score:>2}/{r.max_score:<2}")
    score, total = sum(r.score for r in results), sum(r.max_score for r in results)
    lines += [f"{'-' * width}  ------", f"{'total':<{width}}  {score}/{total}"]
    failed = [r for r in results if r.score < r.max_score]
    if failed:
        lines += ["", "what went wrong:"]
        for output, group in itertools.groupby(failed, key=lambda r: r.output):  # one skeleton message, not 58
            lines += [f"- {r.name}" for r in group]
            lines += ["    " + line for line in output.splitlines()]
    return "\n".join(lines)


def to_json(results: list[Result]) -> dict[str, Any]:
    """Gradescope's results.json shape."""
    return {"score": sum(r.score for r in results), "max_score": sum(r.max_score for r in results),
            "tests": [{"name": r.name, "score": r.score, "max_score": r.max_score, "output": r.output}
                      for r in results]}
