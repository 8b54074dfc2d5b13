"""The Gradescope autograder kit: `minidt assignment gradescope NAME OUT.zip` writes it, its run_autograder calls
`main`.

OUT.zip holds, at its top level (the layout Gradescope expects):

    setup.sh          run once, when Gradescope builds the image: a virtual environment (Python >= 3.11) holding
                      the minidt the kit was made with (the wheel below, without its dependencies) and only what
                      grading needs (requirements.txt)
    run_autograder    run for each submission: python -m minidt.coursework.gradescope, which grades
                      $ROOT/submission/NAME.py (or the submission's only .py file) into $ROOT/results/results.json
    kit.json          the assignment, the backends and their weights, inputs per check, the time limit, the hidden
                      checks' seed and their visibility, the maximum score (public + hidden checks)
    requirements.txt  what grading imports: NumPy, SciPy (erf), array-api-compat, hypothesis, array-api-strict,
                      with minidt's own version bounds (not gymnasium, minari, matplotlib, ...)
    minidt-*.whl      this minidt, built by `pip wheel` from its source tree

$ROOT is /autograder, or $MINIDT_AUTOGRADER_ROOT (to try a kit outside Gradescope). The hidden checks run the same
properties on inputs drawn from the kit's seed; the sandbox may not read $ROOT/source, so a submission cannot read
the seed either.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from typing import Any

from .grader import Hidden, MINIDT_DIR, grade_file, to_json, ungradeable_json
from .runner import UngradeableError

ROOT_VARIABLE = "MINIDT_AUTOGRADER_ROOT"
KIT = "kit.json"
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")  # Gradescope's

GRADING = ("numpy", "scipy", "array-api-compat", "hypothesis", "array-api-strict")  # what grading imports
PIP_LINES = 12  # lines of pip's output shown when it cannot build the wheel

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image: a virtual environment holding the
# minidt this kit was made with (the wheel next to this file, without its dependencies) and only what grading
# needs (requirements.txt: NumPy, SciPy, array-api-compat, hypothesis, array-api-strict).
set -euo pipefail
ROOT="${MINIDT_AUTOGRADER_ROOT:-/autograder}"
# minidt needs Python >= 3.11: the image's python3 when it is one (Ubuntu 24.04's 3.12), else Ubuntu 22.04's
# python3.11 package
newest() {
    for p in python3 python3.13 python3.12 python3.11; do
        if command -v "$p" >/dev/null && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$p"
            return
        fi
    done
}
PYTHON="$(newest)"
if [ -z "$PYTHON" ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv
    PYTHON="$(newest)"
fi
if [ -z "$PYTHON" ]; then
    echo "setup.sh: minidt's grader needs Python >= 3.11, and this image has none" >&2
    exit 1
fi
if ! "$PYTHON" -m venv "$ROOT/venv"; then  # Debian and Ubuntu keep venv's pip in a package of its own
    VERSION="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$VERSION-venv"
    "$PYTHON" -m venv "$ROOT/venv"
fi
"$ROOT/venv/bin/python" -m pip install --no-deps "$ROOT/source/WHEEL"
"$ROOT/venv/bin/python" -m pip install -r "$ROOT/source/requirements.txt"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission: it grades $ROOT/submission/NAME.py into $ROOT/results/results.json.
ROOT="${MINIDT_AUTOGRADER_ROOT:-/autograder}"
PYTHON="$ROOT/venv/bin/python"
[ -x "$PYTHON" ] || PYTHON=python3  # a kit tried without setup.sh: the python3 on PATH, with minidt installed
exec "$PYTHON" -m minidt.coursework.gradescope "$ROOT"
"""


class KitBuildError(ValueError):
    """pip could not build minidt's wheel. `output`: pip's last lines, to show above the one-line message."""

    def __init__(self, message: str, output: str):
        super().__init__(message)
        self.output = output


def source_tree() -> str:
    """The checkout this minidt runs from (the folder holding pyproject.toml next to minidt/)."""
    source = os.path.dirname(MINIDT_DIR)
    if not os.path.isfile(os.path.join(source, "pyproject.toml")):
        raise ValueError(f"the kit ships minidt as a wheel built from its source tree, and {MINIDT_DIR} has none "
                         "next to it: make the kit from a checkout (pip install -e .)")
    return source


def build_wheel(dest: str) -> str:
    """This minidt as a wheel in dest, built by `pip wheel` from a copy of its source tree (the tree itself gets no
    build/ or egg-info); the path of the wheel.

    First offline, with the build requirements installed here, if they are (pyproject's setuptools>=68, and what
    setuptools asks for on top: `wheel` below 70.1); --check-build-dependencies refuses a virtual environment's
    own older setuptools (Python 3.11's venv ships 65.5, which fails inside with "invalid command 'bdist_wheel'").
    Else pip's default: the build requirements installed into a temporary environment, from the package index.
    KitBuildError with pip's last lines when neither works."""
    source = source_tree()
    with open(os.path.join(source, "pyproject.toml"), "rb") as f:
        requires = " ".join(f"'{r}'" for r in tomllib.load(f)["build-system"]["requires"])
    with tempfile.TemporaryDirectory(prefix="minidt-wheel-") as tmp:
        tree = os.path.join(tmp, "minidt-src")
        shutil.copytree(MINIDT_DIR, os.path.join(tree, "minidt"), ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(os.path.join(source, name), tree)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-input", "-w", dest, tree]
        offline = subprocess.run(cmd + ["--no-build-isolation", "--check-build-dependencies"], capture_output=True,
                                 text=True)
        if offline.returncode != 0:
            isolated = subprocess.run(cmd, capture_output=True, text=True)
            if isolated.returncode != 0:
                said = (_errors(isolated) or ["see its output above"])[-1]
                offline_said = (_errors(offline) or ["no ERROR line"])[-1]
                raise KitBuildError(f"pip wheel could not build minidt: {said} (offline, with the build requirements "
                                    f"installed here, it said: {offline_said}; pip install {requires} here to "
                                    "build without the package index)",
                                    "\n".join(_tail(isolated.stdout + isolated.stderr, PIP_LINES)))
    wheels = [f for f in os.listdir(dest) if f.startswith("minidt-") and f.endswith(".whl")]
    return os.path.join(dest, wheels[0])


def _tail(text: str, n: int) -> list[str]:
    return [line for line in text.splitlines() if line.strip()][-n:]


def _errors(r: subprocess.CompletedProcess) -> list[str]:
    return [line.strip() for line in (r.stdout + r.stderr).splitlines() if line.strip().startswith("ERROR:")]


def grading_requirements(source: str) -> list[str]:
    """minidt's requirements (pyproject.toml: the dependencies and the coursework extra) of the packages grading
    imports, GRADING, with minidt's own version bounds."""
    with open(os.path.join(source, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    found = {}
    for req in [*project["dependencies"], *project["optional-dependencies"]["coursework"]]:
        name = re.match(r"[A-Za-z0-9._-]+", req).group().lower().replace("_", "-")
        if name in GRADING:
            found[name] = req.split(";")[0].strip()
    missing = [n for n in GRADING if n not in found]
    if missing:
        raise ValueError(f"pyproject.toml: expected {', '.join(missing)} among the dependencies or the coursework "
                         "extra (grading imports them)")
    return [found[n] for n in GRADING]


def build_kit(name: str, out: str, backends: dict[str, int], max_examples: int, timeout: float,
              seed: "int | None" = None, visibility: str = "after_published") -> dict[str, Any]:
    """Write the kit to `out` (atomically); returns its kit.json."""
    from .. import __version__
    from ..files import atomic_write
    from . import get_assignment

    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility: expected one of {', '.join(VISIBILITIES)}, got {visibility!r}")
    requirements = grading_requirements(source_tree())
    with tempfile.TemporaryDirectory(prefix="minidt-kit-") as tmp:
        wheel = build_wheel(tmp)
        kit = {"assignment": name, "backends": backends, "max_examples": max_examples, "timeout": timeout,
               "hidden_seed": secrets.randbelow(2**32) if seed is None else seed, "hidden_visibility": visibility,
               "max_score": max_score(get_assignment(name), backends), "minidt": __version__,
               "wheel": os.path.basename(wheel)}

        def write(path: str) -> None:
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
                for arcname, text, mode in (("setup.sh", SETUP.replace("WHEEL", kit["wheel"]), 0o755),
                                            ("run_autograder", RUN_AUTOGRADER, 0o755),  # Gradescope runs them as is
                                            (KIT, json.dumps(kit, indent=1) + "\n", 0o644),
                                            ("requirements.txt", "\n".join(requirements) + "\n", 0o644)):
                    info = zipfile.ZipInfo(arcname, time.localtime()[:6])
                    info.external_attr = (0o100000 | mode) << 16
                    z.writestr(info, text, zipfile.ZIP_DEFLATED)
                z.write(wheel, kit["wheel"])

        atomic_write(out, write)
    return kit


def max_score(a: Any, backends: dict[str, int]) -> int:
    """The kit's maximum score: every check twice, on the public inputs and on the hidden ones."""
    return 2 * a.max_score(backends)


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
    top = 0.0
    try:
        with open(os.path.join(root, "source", KIT), encoding="utf-8") as f:
            kit = json.load(f)
        a = get_assignment(kit["assignment"])
        backends = {str(b): int(w) for b, w in kit["backends"].items()}
        top = max_score(a, backends)
        path = find_submission(os.path.join(root, "submission"), a.name)
        report = grade_file(path, a, int(kit["max_examples"]), backends, float(kit["timeout"]),
                            Hidden(int(kit["hidden_seed"]), str(kit["hidden_visibility"])),
                            forbidden=(os.path.join(root, "source"),))
        results = to_json(report)
    except UngradeableError as e:
        results = ungradeable_json(str(e), top, time.monotonic() - started)
    except Exception as e:  # a broken kit or a grader bug: still a results.json, saying so
        results = ungradeable_json(f"the autograder failed: {type(e).__name__}: {e}", top,
                                   time.monotonic() - started)
    atomic_write_text(os.path.join(root, "results", "results.json"), json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
