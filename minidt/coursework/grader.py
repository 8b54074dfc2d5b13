"""Grade a student's file: plan every check, run the student's functions in the sandbox, judge here.

The student's code never runs in this process. The grader draws the inputs, computes the reference's answers, and
sends the sandbox (sandbox.py, supervised by runner.py) only the calls to make; it judges what comes back. So a
file can neither borrow the reference nor patch the grader: neither exists in the process it runs in.

A file that cannot be graded at all (syntax error, an import that fails, a missing function, a wrong signature)
raises UngradeableError with a one-line message; anything wrong inside a function (a wrong result, an exception,
a hang, a crash, sys.exit) costs only the checks that function touches, on the inputs where it happens.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from . import runner
from .checks import Failure, Step, draw_cases
from .hints import strict_hint
from .runner import UngradeableError
from .spec import DEFAULT_BACKENDS, HEADER, Assignment

DEFAULT_MAX_EXAMPLES = 10
DEFAULT_TIMEOUT = 10.0  # seconds a call may take; a unit's calls get this per check in all
MAX_OUTPUT = 4000  # characters of a check's output
MAX_PRINTED_SHOWN = 1000  # characters of what a function printed, in its checks' output
MINIDT_DIR = os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_MISSING = {"ok": False, "kind": "dead", "error": "not run: the grading process stopped before this call"}

__all__ = ["UngradeableError", "Result", "Report", "Hidden", "grade_file", "find_file", "detect_assignment",
           "format_report", "to_json", "ungradeable_json"]


@dataclass
class Result:
    name: str
    score: float
    max_score: float
    output: str
    visibility: str = "visible"

    @property
    def status(self) -> str:
        return "passed" if self.score >= self.max_score else "failed"


@dataclass(frozen=True)
class Hidden:
    """The hidden checks of an instructor's kit: the same checks on inputs drawn from `seed`."""

    seed: int
    visibility: str = "after_published"


@dataclass
class Report:
    title: str
    results: list[Result]
    execution_time: float
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return round(sum(r.score for r in self.results), 4)

    @property
    def max_score(self) -> float:
        return sum(r.max_score for r in self.results)


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


def find_file(path: str, assignments: dict[str, Assignment], name: "str | None" = None) -> str:
    """PATH itself, or for a directory the assignment file in it: DIR/NAME.py for --assignment NAME, else the one
    .py file whose header names an assignment (what `minidt assignment start NAME DIR` wrote)."""
    if not os.path.isdir(path):
        return path
    if name is not None:
        return os.path.join(path, f"{name}.py")
    found = []
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if entry.endswith(".py") and os.path.isfile(full):
            try:
                detect_assignment(full, assignments)
                found.append(full)
            except (UngradeableError, OSError):
                continue
    if len(found) != 1:
        what = "no assignment file" if not found else f"{len(found)} assignment files ({', '.join(found)})"
        raise UngradeableError(f"{path}: expected a directory holding one assignment file (NAME.py, from minidt "
                               f"assignment start), found {what}; name the file")
    return found[0]


def grade_file(path: "str | os.PathLike", assignment: Assignment, max_examples: int = DEFAULT_MAX_EXAMPLES,
               backends: dict[str, int] = DEFAULT_BACKENDS, timeout: float = DEFAULT_TIMEOUT,
               hidden: "Hidden | None" = None, forbidden: tuple[str, ...] = ()) -> Report:
    """Every check of the assignment on the file: points per check (partial credit: the fraction of inputs that
    pass). hidden: also the kit's hidden checks. forbidden: more places the sandbox may not read (the kit)."""
    if max_examples < 1:
        raise ValueError(f"max_examples: expected a positive integer, got {max_examples}")
    if timeout <= 0:
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout}")
    started = time.monotonic()
    path = os.path.abspath(os.fspath(path))
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UngradeableError(f"{path}: cannot read it ({e})") from e
    try:
        compile(source, path, "exec")
    except SyntaxError as e:
        raise UngradeableError(f"{path}, line {e.lineno}: syntax error: {e.msg}") from e
    try:
        results, notes = _grade(path, assignment, max_examples, backends, timeout, None, forbidden)
        if hidden is not None:
            more, _ = _grade(path, assignment, max_examples, backends, timeout, hidden, forbidden)
            results += more
            notes.append(f"{len(more)} hidden checks (the same checks on inputs drawn from the instructor's seed) "
                         f"are shown {hidden.visibility.replace('_', ' ')}.")
        else:
            n = len(assignment.checks(backends))
            notes.append(f"hidden checks: a course's autograder (minidt assignment gradescope) runs these {n} checks "
                         f"again on inputs from a seed only it holds ({n} more checks); this grade has none of them.")
        if "strict" not in backends:
            notes.append("not graded here: the strict Array API backend (--backends numpy,strict runs every check "
                         "there too: does the file use only its inputs' namespace and device, as GPU code must?)")
    except UngradeableError as e:
        raise UngradeableError(f"{path}: {e}") from e
    return Report(f"{path}: assignment {assignment.number}, {assignment.title} ({assignment.name})", results,
                  time.monotonic() - started, notes)


def _grade(path: str, a: Assignment, n: int, backends: dict[str, int], timeout: float, hidden: "Hidden | None",
           forbidden: tuple[str, ...]) -> tuple[list[Result], list[str]]:
    ref = a.reference()
    plans = []  # per unit: [(case, calls, plan), ...]
    for unit in a.units:
        cases = draw_cases(unit.draw, n, None if hidden is None else hidden.seed)
        plans.append([(case, *unit.plan(case, ref)) for case in cases])
    request = _request(path, a, plans, backends, forbidden)
    jobs = [(u, b, c) for u in range(len(plans)) for b in backends for c in range(len(plans[u]))]
    functions = [[[call.fn for call in calls] for _, calls, _ in unit_plans] for unit_plans in plans]
    budgets = [timeout * len(unit.kinds()) * len(backends) for unit in a.units]
    run = runner.run(request, jobs, functions, timeout, budgets, lambda load: _check_load(load, a))
    results = []
    for u, unit in enumerate(a.units):
        cases = [case for case, _, _ in plans[u]]
        steps = {(b, c): [Step.from_message(run.steps.get((u, b, c), {}).get(i, _MISSING)) for i in range(len(calls))]
                 for b in backends for c, (_, calls, _) in enumerate(plans[u])}
        verdicts = {(b, kind.key): [_verdict(unit, kind.key, case, plan, steps[b, c], b)
                                    for c, (case, _, plan) in enumerate(plans[u])]
                    for b in backends for kind in unit.kinds()}
        for b, weight in backends.items():
            step_lists = [list(zip(calls, steps[b, c])) for c, (_, calls, _) in enumerate(plans[u])]
            for kind in unit.kinds():
                name = f"{kind.label} [{b}{', hidden' if hidden else ''}]"
                results.append(_result(name, kind.points * weight, verdicts[b, kind.key], cases, step_lists,
                                       kind.function, b, verdicts.get(("numpy", kind.key)),
                                       "visible" if hidden is None else hidden.visibility))
    notes = []
    if hidden is None:
        if run.load.get("printed_total"):
            notes.append(f"your file printed while it was imported ({run.load['printed_total']} characters):\n"
                         + run.load["printed"][:MAX_PRINTED_SHOWN])
        if run.output.strip():
            notes.append("written to stdout / stderr directly (around sys.stdout):\n" + run.output)
    return results, notes


def _request(path: str, a: Assignment, plans: list, backends: dict[str, int], forbidden: tuple[str, ...]) -> dict:
    from . import assignments

    imports = a.imports()
    by_module = {x.module: x for x in assignments().values()}
    allowed = "; ".join(f"{m} ({', '.join(names)})" if names else m for m, names in imports.items())
    units = []
    for unit, unit_plans in zip(a.units, plans):
        helpers = a.helpers(unit)
        units.append({"inject": list(helpers), "inject_source": a.helper_source(helpers) if helpers else "",
                      "cases": [[call.wire() for call in calls] for _, calls, _ in unit_plans]})
    kernel_cache = os.environ.get("CUPY_CACHE_DIR") or os.path.expanduser("~/.cupy/kernel_cache")
    return {
        "sys_path": [os.path.abspath(p) if p else os.getcwd() for p in sys.path],
        "minidt_dir": MINIDT_DIR,
        "forbidden": [MINIDT_DIR, *forbidden],
        "writable": [kernel_cache] if "cupy" in backends else [],  # CuPy compiles kernels and caches them there
        "environ": {"CUPY_CACHE_DIR": kernel_cache} if "cupy" in backends else {},
        "allowed": [m for m in imports if m not in by_module],
        "provided": {m: by_module[m].source(solution=True) for m in imports if m in by_module},
        "refusal": "{name} cannot be imported while grading: a graded file may import, of minidt, " + allowed
                   + "; the rest of minidt is the reference solution",
        "backends": list(backends),
        "model": any(getattr(unit, "needs_model", False) for unit in a.units),
        "references": sorted({a.reference_function(f.name).__module__.partition(".")[2] for f in a.functions}),
        "path": path,
        "module": f"minidt_student_{a.name}",
        "functions": [f.name for f in a.functions],
        "units": units,
    }


def _verdict(unit: Any, key: str, case: Any, plan: Any, steps: list[Step], backend: str) -> "Failure | None":
    try:
        unit.judge(key, case, plan, steps, backend)
    except Failure as f:
        return f
    return None


def _check_load(load: dict, a: Assignment) -> None:
    """A missing function or a wrong signature: the file cannot be graded."""
    for f in a.functions:
        info = load["loaded"].get(f.name, {})
        if not info.get("callable"):
            raise UngradeableError(f"missing function {f.name} (assignment {a.name} needs "
                                   f"{', '.join(g.name for g in a.functions)})")
        expected, got = a.parameters(f.name), tuple(info.get("params") or ("?",))
        if got != expected:
            raise UngradeableError(f"wrong signature for {f.name}: expected ({', '.join(expected)}), got "
                                   f"({', '.join(got)})")


def _result(name: str, points: float, verdicts: list, cases: list, step_lists: list, function: str, backend: str,
            on_numpy: "list | None", visibility: str) -> Result:
    """A check's score (the fraction of inputs that pass) and its output: the failure on the smallest failing input,
    and what the function printed. on_numpy: the same check's verdicts on NumPy (the strict hint is for code that
    works there and raises here)."""
    n = len(verdicts)
    failing = [c for c, v in enumerate(verdicts) if v is not None]
    score = round(points * (n - len(failing)) / n, 4) if n else 0.0
    if not failing:
        shown, text = 0, f"passed ({n} input{'s' if n != 1 else ''})"
    else:
        shown = min(failing, key=lambda c: (cases[c].size, c))
        f = verdicts[shown]
        text = str(f)
        if f.exception and backend == "strict" and on_numpy is not None and on_numpy[shown] is None:
            text += "\n" + strict_hint(str(f))
        if not f.general:
            text += f"\nfailed on {len(failing)} of {n} inputs; the smallest: {cases[shown].describe()}"
        elif len(failing) < n:
            text += f"\n(on {len(failing)} of {n} inputs)"
    printed = next((s for call, s in step_lists[shown] if call.fn == function and s.printed_total), None) if n else None
    if printed is not None:
        more = f", the first {MAX_PRINTED_SHOWN} shown" if printed.printed_total > MAX_PRINTED_SHOWN else ""
        text += (f"\n{function} printed {printed.printed_total} characters (one call{more}):\n"
                 + printed.printed[:MAX_PRINTED_SHOWN])
    if len(text) > MAX_OUTPUT:
        text = text[:MAX_OUTPUT] + " ..."
    return Result(name, score, points, text, visibility)


def _points(x: float) -> str:
    return f"{round(x, 2):g}"


def format_report(report: Report) -> str:
    """The per-check table, the failures' explanations, the total and the notes."""
    results = report.results
    width = max([len(r.name) for r in results] + [len("check")])
    lines = [report.title, f"{'check':<{width}}  points", f"{'-' * width}  ------"]
    for r in results:
        lines.append(f"{r.name:<{width}}  {_points(r.score):>4}/{_points(r.max_score)}")
    lines += [f"{'-' * width}  ------", f"{'total':<{width}}  {_points(report.score)}/{_points(report.max_score)}"]
    shown = [r for r in results if r.score < r.max_score or " printed " in r.output]
    if shown:
        lines += ["", "what went wrong:" if any(r.score < r.max_score for r in shown) else "output:"]
        for output, group in itertools.groupby(shown, key=lambda r: r.output):  # one skeleton message, not 60
            lines += [f"- {r.name}" for r in group]
            lines += ["    " + line for line in output.splitlines()]
    lines += [""] + report.notes + [f"graded in {report.execution_time:.1f} s"]
    return "\n".join(lines)


def to_json(report: Report) -> dict[str, Any]:
    """Gradescope's results.json."""
    return {"score": report.score, "max_score": report.max_score, "execution_time": round(report.execution_time, 1),
            "output": "\n".join([f"{report.title}: {_points(report.score)}/{_points(report.max_score)}"]
                                + report.notes),
            "tests": [{"name": r.name, "score": r.score, "max_score": r.max_score, "status": r.status,
                       "output": r.output, "visibility": r.visibility} for r in report.results]}


def ungradeable_json(message: str, max_score: float, execution_time: float) -> dict[str, Any]:
    """results.json for a file that cannot be graded: score 0, the reason as the top-level output."""
    return {"score": 0, "max_score": max_score, "execution_time": round(execution_time, 1), "output": message,
            "tests": []}
