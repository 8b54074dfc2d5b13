"""Coursework: graded assignments on minidt's layers, from one affine map to a training step.

    minidt assignment list                      the assignments
    minidt assignment start NAME DIR            DIR/NAME.py: signatures, docstrings, `raise NotImplementedError`
    minidt assignment start NAME DIR --solution the reference solution (self-study)
    minidt grade DIR/NAME.py (or DIR) [--json]  points per check, and the total
    minidt assignment gradescope NAME OUT.zip   a Gradescope autograder, with hidden checks

Each assignment is a module here holding the reference functions (minidt's own layer functions where they have
the assignment's signature) and its `ASSIGNMENT` (spec.Assignment): the functions, the units of checks
(pair.Pair, checks.Question, the training units), the text of the skeleton. `checks.py` and `pair.py` plan the
checks and judge them, `grader.py` runs them;
`sandbox.py` is the child process the student's file runs in and `runner.py` supervises it (time limits,
crashes); `gradescope.py` makes the kit and runs it; `cli.py` holds the commands.
"""

from __future__ import annotations

import importlib

from .spec import Assignment

MODULES = ("linear_activations", "layernorm", "attention", "gpt2_block", "dt_embedding", "training", "cross_entropy")


def assignments() -> dict[str, Assignment]:
    """{name: Assignment}, in course order."""
    found = [importlib.import_module(f"{__name__}.{m}").ASSIGNMENT for m in MODULES]
    return {a.name: a for a in sorted(found, key=lambda a: a.number)}


def get_assignment(name: str) -> Assignment:
    table = assignments()
    if name not in table:
        raise ValueError(f"assignment: expected one of {', '.join(table)}, got {name!r}")
    return table[name]
