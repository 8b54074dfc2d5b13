"""`minidt assignment list|start` and `minidt grade`: the command implementations (minidt/cli.py wires them in).

Exit status: 0 when a file was graded, however many points it lost; 2 (through cli.UsageError) when it cannot
be graded or the command line is wrong, with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable

from ..cli import UsageError
from . import assignments
from .grader import DEFAULT_MAX_EXAMPLES, UngradeableError, detect_assignment, format_table, grade_file, to_json


def add_parsers(subparsers: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add the `assignment` and `grade` subcommands; returns {command: implementation} for cli.COMMANDS."""
    a = subparsers.add_parser("assignment", help="list the assignments, or start one (skeleton or solution)")
    asub = a.add_subparsers(dest="assignment_command", required=True)
    lst = asub.add_parser("list", help="the assignments, their functions and points")
    lst.add_argument("--names", action="store_true", help="names only, one per line")
    start = asub.add_parser("start", help="write DIR/NAME.py: the skeleton to fill in (or the reference solution)")
    start.add_argument("name", metavar="NAME")
    start.add_argument("dir", metavar="DIR")
    start.add_argument("--solution", action="store_true", help="write the reference solution (for instructors)")
    start.add_argument("--force", action="store_true", help="overwrite DIR/NAME.py if it exists")

    g = subparsers.add_parser("grade", help="grade a student's assignment file: points per check and the total")
    g.add_argument("path", metavar="PATH")
    g.add_argument("--assignment", metavar="NAME", help="which assignment (default: the file's header line)")
    g.add_argument("--json", action="store_true", help='print {"score", "max_score", "tests": [...]} (Gradescope)')
    g.add_argument("--max-examples", type=int, default=DEFAULT_MAX_EXAMPLES,
                   help=f"hypothesis examples per check (default {DEFAULT_MAX_EXAMPLES})")
    return {"assignment": cmd_assignment, "grade": cmd_grade}


def cmd_assignment(args: argparse.Namespace) -> int:
    table = assignments()
    if args.assignment_command == "list":
        if args.names:
            print("\n".join(table))
            return 0
        width = max(len(n) for n in table)
        print(f"{'#':>2}  {'name':<{width}}  {'points':>6}  title: functions")
        for name, a in table.items():
            print(f"{a.number:>2}  {name:<{width}}  {a.max_score():>6}  {a.title}: "
                  + ", ".join(f.name for f in a.functions))
        return 0
    if args.name not in table:
        raise UsageError(f"unknown assignment {args.name!r}: expected one of {', '.join(table)}")
    from ..checkpoint import atomic_write_text

    a = table[args.name]
    path = os.path.join(args.dir, f"{a.name}.py")
    if os.path.exists(path) and not args.force:
        raise UsageError(f"{path} exists; pass --force to overwrite it")
    atomic_write_text(path, a.source(solution=args.solution))
    what = "the reference solution" if args.solution else f"the skeleton ({len(a.functions)} functions to write)"
    print(f"wrote {path}: assignment {a.number}, {a.title}, {what}")
    print(f"grade it with: minidt grade {path}")
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    table = assignments()
    if args.max_examples < 1:
        raise UsageError(f"--max-examples: expected a positive integer, got {args.max_examples}")
    if not os.path.isfile(args.path):
        raise UsageError(f"{args.path}: no such file")
    try:
        import hypothesis  # noqa: F401  the grader draws its inputs with it
    except ImportError:
        raise UsageError("grading needs hypothesis: pip install hypothesis (or pip install -e '.[test]')")
    try:
        if args.assignment is not None:
            if args.assignment not in table:
                raise UngradeableError(f"unknown assignment {args.assignment!r}: expected one of {', '.join(table)}")
            name = args.assignment
        else:
            name = detect_assignment(args.path, table)
        a = table[name]
        results = grade_file(args.path, a, max_examples=args.max_examples)
    except UngradeableError as e:
        raise UsageError(str(e))
    if args.json:
        print(json.dumps(to_json(results), indent=2))
    else:
        print(format_table(results, f"{args.path}: assignment {a.number}, {a.title} ({a.name})"))
    return 0
