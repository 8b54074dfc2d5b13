"""`minidt assignment list|start|gradescope` and `minidt grade`: the command implementations (minidt/cli.py wires
them in).

Exit status: 0 when a file was graded, however many points it lost; 2 (through arguments.UsageError) when it cannot
be graded or the command line is wrong, with a one-line message; 1 when the grader itself failed. With --json,
stdout holds exactly one JSON document whenever a file was named, gradeable or not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

from ..arguments import UsageError
from . import assignments
from .grader import (DEFAULT_MAX_EXAMPLES, DEFAULT_TIMEOUT, UngradeableError, detect_assignment, find_file,
                     format_report, grade_file, to_json, ungradeable_json)
from .spec import DEFAULT_BACKENDS

DEFAULT_BACKENDS_TEXT = ",".join(f"{b}={w}" for b, w in DEFAULT_BACKENDS.items())
BACKENDS_HELP = ("backends and their weights, NAME[=WEIGHT],...: each check's points on a backend are multiplied "
                 f"by its weight (default {DEFAULT_BACKENDS_TEXT}: the math; numpy,strict also grades portable Array "
                 "API code, numpy=3,strict=1 weights it less)")


def add_parsers(subparsers: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Add the `assignment` and `grade` subcommands; returns {command: implementation} for cli.COMMANDS."""
    a = subparsers.add_parser("assignment", help="list the assignments, start one, or make a Gradescope kit")
    asub = a.add_subparsers(dest="assignment_command", required=True)
    lst = asub.add_parser("list", help="the assignments, their functions and points")
    lst.add_argument("--names", action="store_true", help="names only, one per line")
    start = asub.add_parser("start", help="write DIR/NAME.py: the skeleton to fill in (or the reference solution)")
    start.add_argument("name", metavar="NAME")
    start.add_argument("dir", metavar="DIR")
    start.add_argument("--solution", action="store_true", help="write the reference solution (self-study; keep it "
                       "out of a graded course)")
    start.add_argument("--force", action="store_true", help="overwrite DIR/NAME.py if it exists")
    kit = asub.add_parser("gradescope", help="write OUT.zip, a Gradescope autograder for assignment NAME: setup.sh, "
                          "run_autograder, this minidt as a wheel, and the hidden checks' seed")
    kit.add_argument("name", metavar="NAME")
    kit.add_argument("out", metavar="OUT.zip")
    kit.add_argument("--backends", default=DEFAULT_BACKENDS_TEXT, help=BACKENDS_HELP)
    kit.add_argument("--max-examples", type=int, default=DEFAULT_MAX_EXAMPLES,
                     help=f"inputs per check, public and hidden (default {DEFAULT_MAX_EXAMPLES})")
    kit.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                     help=f"seconds one call may take (default {DEFAULT_TIMEOUT:g})")
    kit.add_argument("--seed", type=int, help="the hidden checks' seed (default: a random one, kept in the kit)")
    from .gradescope import VISIBILITIES

    kit.add_argument("--hidden-visibility", choices=VISIBILITIES, default="after_published",
                     help="when students see the hidden checks' results (Gradescope's names; default after_published)")
    kit.add_argument("--force", action="store_true", help="overwrite OUT.zip if it exists")

    g = subparsers.add_parser("grade", help="grade a student's assignment file: points per check and the total")
    g.add_argument("path", metavar="PATH", help="the file, or the folder `minidt assignment start` wrote it into")
    g.add_argument("--assignment", metavar="NAME", help="which assignment (default: the file's header line)")
    g.add_argument("--json", action="store_true", help="print Gradescope's results.json instead of a table")
    g.add_argument("--max-examples", type=int, default=DEFAULT_MAX_EXAMPLES,
                   help=f"inputs drawn per check (default {DEFAULT_MAX_EXAMPLES})")
    g.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds one call of a student's function may take; a function's checks get as much each, "
                        f"in all (default {DEFAULT_TIMEOUT:g})")
    g.add_argument("--backends", default=DEFAULT_BACKENDS_TEXT, help=BACKENDS_HELP)
    return {"assignment": cmd_assignment, "grade": cmd_grade}


def parse_backends(text: str) -> dict[str, int]:
    """'numpy=2,strict' -> {'numpy': 2, 'strict': 1}; each backend must work here (CuPy needs a GPU)."""
    from ..backend import BACKENDS, get_backend

    out: dict[str, int] = {}
    for item in text.split(","):
        name, _, weight = item.strip().partition("=")
        if name not in BACKENDS or name in out:
            raise UsageError(f"--backends: expected distinct names among {', '.join(BACKENDS)} (NAME[=WEIGHT],...), "
                             f"got {text!r}")
        try:
            out[name] = int(weight) if weight else 1
        except ValueError:
            out[name] = 0
        if out[name] < 1:
            raise UsageError(f"--backends: expected a positive integer weight for {name}, got {weight!r}")
        try:
            get_backend(name)
        except ImportError as e:  # strict without array-api-strict
            raise UsageError(f"--backends {name}: {e}; pip install -e '.[coursework]'")
        except RuntimeError as e:  # cupy without CuPy or a GPU
            raise UsageError(f"--backends {name}: {e}")
    return out


def _check_numbers(args: argparse.Namespace) -> None:
    if args.max_examples < 1:
        raise UsageError(f"--max-examples: expected a positive integer, got {args.max_examples}")
    if not args.timeout > 0:
        raise UsageError(f"--timeout: expected a positive number of seconds, got {args.timeout}")


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
    a = table[args.name]
    if args.assignment_command == "gradescope":
        return _gradescope(args, a.name)
    from ..files import atomic_write_text

    if os.path.exists(args.dir) and not os.path.isdir(args.dir):
        raise UsageError(f"{args.dir}: expected a directory to write {a.name}.py into, got a file")
    path = os.path.join(args.dir, f"{a.name}.py")
    if os.path.exists(path) and not args.force:
        raise UsageError(f"{path} exists; pass --force to overwrite it")
    try:
        atomic_write_text(path, a.source(solution=args.solution))
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}")
    what = "the reference solution" if args.solution else f"the skeleton ({len(a.functions)} functions to write)"
    print(f"wrote {path}: assignment {a.number}, {a.title}, {what}")
    print(f"grade it with: minidt grade {args.dir}")
    return 0


def _gradescope(args: argparse.Namespace, name: str) -> int:
    from .gradescope import KitBuildError, build_kit

    backends = parse_backends(args.backends)
    _check_numbers(args)
    if os.path.isdir(args.out):
        raise UsageError(f"{args.out}: expected the path of the zip to write, got a directory")
    if os.path.exists(args.out) and not args.force:
        raise UsageError(f"{args.out} exists; pass --force to overwrite it")
    try:
        kit = build_kit(name, args.out, backends, args.max_examples, args.timeout, args.seed, args.hidden_visibility)
    except KitBuildError as e:
        print("pip wheel's last lines:\n" + "\n".join("    " + line for line in e.output.splitlines()),
              file=sys.stderr)
        raise UsageError(str(e))
    except ValueError as e:
        raise UsageError(str(e))
    except OSError as e:
        raise UsageError(f"cannot write {args.out}: {e.strerror or e}")
    print(f"wrote {args.out}: the Gradescope autograder of assignment {name} (backends "
          f"{', '.join(f'{b}={w}' for b, w in backends.items())}, {args.max_examples} inputs per check, hidden checks "
          f"shown {args.hidden_visibility}, minidt {kit['minidt']})")
    print(f"maximum score {kit['max_score']}: {kit['max_score'] // 2} for the public checks (what `minidt grade` "
          f"shows) and {kit['max_score'] // 2} for their hidden twins; give the assignment that many points")
    print("upload it as the assignment's autograder (Configure Autograder -> Zip file upload)")
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    table = assignments()
    backends = parse_backends(args.backends)
    _check_numbers(args)
    try:
        import hypothesis  # noqa: F401  the grader draws its inputs with it
    except ImportError:
        raise UsageError("grading needs hypothesis: pip install hypothesis (or pip install -e '.[coursework]')")
    started = time.monotonic()
    a = table.get(args.assignment or "")
    try:
        if args.assignment is not None and a is None:
            raise UngradeableError(f"unknown assignment {args.assignment!r}: expected one of {', '.join(table)}")
        path = find_file(args.path, table, args.assignment)
        if not os.path.isfile(path):
            raise UngradeableError(f"{path}: no such file")
        a = a or table[detect_assignment(path, table)]
        report = grade_file(path, a, args.max_examples, backends, args.timeout)
    except UngradeableError as e:
        if args.json:
            max_score = a.max_score(backends) if a is not None else 0
            print(json.dumps(ungradeable_json(str(e), max_score, time.monotonic() - started), indent=2))
        raise UsageError(str(e))
    except RuntimeError as e:  # the grader's own failure (runner.SandboxError): not the student's
        if args.json:
            print(json.dumps(ungradeable_json(f"the grader failed: {e}", 0, time.monotonic() - started), indent=2))
        print(f"minidt grade: the grader failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps(to_json(report), indent=2) if args.json else format_report(report))
    return 0
