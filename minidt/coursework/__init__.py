"""Coursework: graded assignments on minidt's layers, from one affine map to a training step.

    minidt assignment list                      the assignments
    minidt assignment start NAME DIR            DIR/NAME.py: signatures, docstrings, `raise NotImplementedError`
    minidt assignment start NAME DIR --solution the reference solution, for instructors
    minidt grade DIR/NAME.py [--json]           points per check, and the total

Each assignment is a module here holding the reference functions (minidt's own layer functions where they have
the assignment's signature) and its `ASSIGNMENT` (spec.Assignment): the functions, the checks, the text of the
skeleton. `grader.py` runs the checks; `cli.py` holds the commands.
"""

from __future__ import annotations

import importlib

from .spec import Assignment

MODULES = ("linear_activations", "layernorm", "attention", "gpt2_block", "dt_embedding", "training")


def assignments() -> dict[str, Assignment]:
    """{name: Assignment}, in course order."""
    found = [importlib.import_module(f"{__name__}.{m}").ASSIGNMENT for m in MODULES]
    return {a.name: a for a in sorted(found, key=lambda a: a.number)}


def get_assignment(name: str) -> Assignment:
    table = assignments()
    if name not in table:
        raise ValueError(f"assignment: expected one of {', '.join(table)}, got {name!r}")
    return table[name]
