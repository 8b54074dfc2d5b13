"""The Gradescope autograder kit: `minidt assignment gradescope NAME OUT.zip` writes it, its run_autograder calls
`main`.

OUT.zip holds, at its top level (the layout Gradescope expects):

    setup.sh          run once, when Gradescope builds the image: a virtual environment holding the minidt the
                      kit was made with (the wheel below) and what grading needs (the coursework extra)
    run_autograder    run for each submission: python -m minidt.coursework.gradescope, which grades
                      $ROOT/submission/NAME.py (or the submission's only .py file) into $ROOT/results/results.json
    kit.json          the assignment, the backends and their weights, inputs per check, the time limit, the hidden
                      checks' seed and their visibility
    minidt-*.whl      this minidt, built by `pip wheel` from its source tree

$ROOT is /autograder, or $MINIDT_AUTOGRADER_ROOT (to try a kit outside Gradescope). The hidden checks run the same
properties on inputs drawn from the kit's seed; the sandbox may not read $ROOT/source, so a submission cannot read
the seed either.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Any

from .grader import Hidden, MINIDT_DIR, grade_file, to_json, ungradeable_json
from .runner import UngradeableError

ROOT_VARIABLE = "MINIDT_AUTOGRADER_ROOT"
KIT = "kit.json"
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")  # Gradescope's

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image: a virtual environment holding the
# minidt this kit was made with (the wheel next to this file) and what grading needs.
set -euo pipefail
ROOT="${MINIDT_AUTOGRADER_ROOT:-/autograder}"
if command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
fi
python3 -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --upgrade pip
"$ROOT/venv/bin/python" -m pip install "$ROOT/source/WHEEL[coursework]"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission: it grades $ROOT/submission/NAME.py into $ROOT/results/results.json.
ROOT="${MINIDT_AUTOGRADER_ROOT:-/autograder}"
PYTHON="$ROOT/venv/bin/python"
[ -x "$PYTHON" ] || PYTHON=python3  # a kit tried without setup.sh: the python3 on PATH, with minidt installed
exec "$PYTHON" -m minidt.coursework.gradescope "$ROOT"
"""


def build_wheel(dest: str) -> str:
    """This minidt as a wheel in dest, built by `pip wheel` from a copy of its source tree (the tree itself gets no
    build/ or egg-info); the path of the wheel."""
    source = os.path.dirname(MINIDT_DIR)
    if not os.path.isfile(os.path.join(source, "pyproject.toml")):
        raise ValueError(f"the kit ships minidt as a wheel built from its source tree, and {MINIDT_DIR} has none "
                         "next to it: make the kit from a checkout (pip install -e .)")
    with tempfile.TemporaryDirectory(prefix="minidt-wheel-") as tmp:
        tree = os.path.join(tmp, "minidt-src")
        shutil.copytree(MINIDT_DIR, os.path.join(tree, "minidt"), ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(os.path.join(source, name), tree)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dest, tree]
        if importlib.util.find_spec("setuptools") is not None:  # build offline with it (else pip fetches one)
            cmd.insert(5, "--no-build-isolation")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise ValueError(f"pip wheel failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    wheels = [f for f in os.listdir(dest) if f.startswith("minidt-") and f.endswith(".whl")]
    return os.path.join(dest, wheels[0])


def build_kit(name: str, out: str, backends: dict[str, int], max_examples: int, timeout: float,
              seed: "int | None" = None, visibility: str = "after_published") -> dict[str, Any]:
    """Write the kit to `out` (atomically); returns its kit.json."""
    from .. import __version__
    from ..files import atomic_write

    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility: expected one of {', '.join(VISIBILITIES)}, got {visibility!r}")
    with tempfile.TemporaryDirectory(prefix="minidt-kit-") as tmp:
        wheel = build_wheel(tmp)
        kit = {"assignment": name, "backends": backends, "max_examples": max_examples, "timeout": timeout,
               "hidden_seed": secrets.randbelow(2**32) if seed is None else seed, "hidden_visibility": visibility,
               "minidt": __version__, "wheel": os.path.basename(wheel)}

        def write(path: str) -> None:
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
                for arcname, text in (("setup.sh", SETUP.replace("WHEEL", kit["wheel"])),
                                      ("run_autograder", RUN_AUTOGRADER)):
                    info = zipfile.ZipInfo(arcname, time.localtime()[:6])
                    info.external_attr = 0o100755 << 16  # executable: Gradescope runs them as they are
                    z.writestr(info, text)
                info = zipfile.ZipInfo(KIT, time.localtime()[:6])
                info.external_attr = 0o100644 << 16
                z.writestr(info, json.dumps(kit, indent=1) + "\n")
                z.write(wheel, kit["wheel"])

        atomic_write(out, write)
    return kit


def find_submission(folder: str, name: str) -> str:
    """folder/NAME.py, or the only .py file anywhere in folder."""
    path = os.path.join(folder, f"{name}.py")
    if os.path.isfile(path):
        return path
    found = sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.endswith(".py"))
    if len(found) != 1:
        names = ", ".join(os.path.basename(f) for f in found)
        what = "no .py file" if not found else f"{len(found)} .py files ({names})"
        raise UngradeableError(f"the submission holds no {name}.py and {what}: submit {name}.py")
    return found[0]


def main(argv: "list[str] | None" = None) -> int:
    """run_autograder's work: always writes results.json, with score 0 and the reason when nothing can be graded."""
    from ..files import atomic_write_text
    from . import get_assignment

    args = sys.argv[1:] if argv is None else argv
    root = args[0] if args else os.environ.get(ROOT_VARIABLE, "/autograder")
    started = time.monotonic()
    max_score = 0.0
    try:
        with open(os.path.join(root, "source", KIT), encoding="utf-8") as f:
            kit = json.load(f)
        a = get_assignment(kit["assignment"])
        backends = {str(b): int(w) for b, w in kit["backends"].items()}
        max_score = 2 * a.max_score(backends)  # the public checks and their hidden twins
        path = find_submission(os.path.join(root, "submission"), a.name)
        report = grade_file(path, a, int(kit["max_examples"]), backends, float(kit["timeout"]),
                            Hidden(int(kit["hidden_seed"]), str(kit["hidden_visibility"])),
                            forbidden=(os.path.join(root, "source"),))
        results = to_json(report)
    except UngradeableError as e:
        results = ungradeable_json(str(e), max_score, time.monotonic() - started)
    except Exception as e:  # a broken kit or a grader bug: still a results.json, saying so
        results = ungradeable_json(f"the autograder failed: {type(e).__name__}: {e}", max_score,
                                   time.monotonic() - started)
    atomic_write_text(os.path.join(root, "results", "results.json"), json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
