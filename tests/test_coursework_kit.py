"""The Gradescope kit end to end: `minidt assignment gradescope` makes the zip, which is unzipped into a temporary
autograder root (MINIDT_AUTOGRADER_ROOT) and run as Gradescope runs it, with the minidt from the kit's own wheel:
the solution gets every point, public and hidden, the skeleton none, and results.json is always written.

The module's kit is built offline (the test extra holds the build requirements). One test does what an instructor
with a fresh virtual environment does, on the oldest Python minidt supports: makes the kit there (pip's own
lines when it cannot), runs the kit's setup.sh and grades with only the packages grading needs."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import minidt
from minidt.cli import main
from minidt.coursework import get_assignment
from minidt.coursework.checks import draw_cases
from minidt.coursework.gradescope import GRADING, find_submission
from minidt.coursework.grader import MINIDT_DIR, UngradeableError

NAME = "layernorm"
CHECKOUT = Path(MINIDT_DIR).parent


def offline(env: dict) -> dict:
    """env, with pip cut off from every package index and find-links folder (and from its config files)."""
    env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
    return {**env, "PIP_NO_INDEX": "1", "PIP_CONFIG_FILE": os.devnull}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The kit and what the command printed. Built offline: the build requirements are installed here (the test
    extra), so no index is needed."""
    out = tmp_path_factory.mktemp("kit") / "autograder.zip"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        for k in [k for k in os.environ if k.startswith("PIP_")]:
            mp.delenv(k)
        mp.setenv("PIP_NO_INDEX", "1")
        mp.setenv("PIP_CONFIG_FILE", os.devnull)
        assert main(["assignment", "gradescope", NAME, str(out), "--max-examples", "2", "--seed", "1234",
                     "--backends", "numpy=2,strict"]) == 0
    return out, printed.getvalue()


@pytest.fixture
def kit(made):
    return made[0]


def autograder(tmp_path, kit, submission: dict[str, str]) -> dict:
    """Unzip the kit into ROOT/source and its wheel into a site folder, put the submission in ROOT/submission, run
    ROOT/source/run_autograder as Gradescope would, and return ROOT/results/results.json."""
    root = tmp_path / "autograder"
    with zipfile.ZipFile(kit) as z:
        z.extractall(root / "source")
    wheel = json.loads((root / "source" / "kit.json").read_text())["wheel"]
    with zipfile.ZipFile(root / "source" / wheel) as z:
        z.extractall(tmp_path / "site")
    (root / "submission").mkdir()
    for name, text in submission.items():
        (root / "submission" / name).write_text(text)
    env = {**os.environ, "MINIDT_AUTOGRADER_ROOT": str(root), "PYTHONPATH": str(tmp_path / "site"),
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    runner = root / "source" / "run_autograder"
    runner.chmod(runner.stat().st_mode | stat.S_IXUSR)  # zipfile does not restore the mode
    r = subprocess.run([str(runner)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads((root / "results" / "results.json").read_text())


def test_the_kit_holds_what_gradescope_runs_and_the_tested_minidt(kit, tmp_path):
    with zipfile.ZipFile(kit) as z:
        names = set(z.namelist())
        info = {i.filename: i for i in z.infolist()}
        config = json.loads(z.read("kit.json"))
        setup = z.read("setup.sh").decode()
        requirements = z.read("requirements.txt").decode().split()
        z.extract(config["wheel"], tmp_path)
    assert names == {"setup.sh", "run_autograder", "kit.json", "requirements.txt", config["wheel"]}
    for script in ("setup.sh", "run_autograder"):
        assert (info[script].external_attr >> 16) & 0o111  # executable
    public = get_assignment(NAME).max_score({"numpy": 2, "strict": 1})
    assert config == {"assignment": NAME, "backends": {"numpy": 2, "strict": 1}, "max_examples": 2, "timeout": 10.0,
                      "hidden_seed": 1234, "hidden_visibility": "after_published", "max_score": 2 * public,
                      "minidt": minidt.__version__, "wheel": f"minidt-{minidt.__version__}-py3-none-any.whl"}
    assert f'pip install --no-deps "$ROOT/source/{config["wheel"]}"' in setup
    assert 'pip install -r "$ROOT/source/requirements.txt"' in setup
    assert [Requirement(r).name for r in requirements] == list(GRADING)  # not gymnasium, minari, matplotlib, ...
    assert subprocess.run(["bash", "-n", "-c", setup]).returncode == 0  # it parses
    with zipfile.ZipFile(tmp_path / config["wheel"]) as wheel:  # the exact minidt the instructor tested
        for rel in ("coursework/grader.py", "coursework/sandbox.py", "layers/layernorm.py"):
            with open(os.path.join(MINIDT_DIR, rel), "rb") as f:
                assert wheel.read(f"minidt/{rel}") == f.read(), rel


def test_the_command_prints_the_maximum_score(made):
    top = 2 * get_assignment(NAME).max_score({"numpy": 2, "strict": 1})
    assert f"maximum score {top}: {top // 2} for the public checks" in made[1]


def test_run_autograder_grades_the_solution_and_the_skeleton_public_and_hidden(kit, tmp_path):
    a = get_assignment(NAME)
    public = a.max_score({"numpy": 2, "strict": 1})
    (tmp_path / "solution").mkdir()
    results = autograder(tmp_path / "solution", kit, {f"{NAME}.py": a.source(solution=True)})
    assert results["score"] == results["max_score"] == 2 * public
    hidden = [t for t in results["tests"] if t["name"].endswith(", hidden]")]
    assert len(hidden) == len(results["tests"]) / 2 == 16
    assert {t["visibility"] for t in hidden} == {"after_published"}
    assert {t["visibility"] for t in results["tests"] if t not in hidden} == {"visible"}
    assert {t["status"] for t in results["tests"]} == {"passed"} and results["execution_time"] > 0
    assert "16 hidden checks" in results["output"]
    (tmp_path / "skeleton").mkdir()
    results = autograder(tmp_path / "skeleton", kit, {f"{NAME}.py": a.source(solution=False)})
    assert results["score"] == 0 and results["max_score"] == 2 * public and len(results["tests"]) == 32


def test_a_submission_cannot_read_the_kit(kit, tmp_path):
    """The only .py of the submission, under another name, tries to read the kit's seed while it is imported."""
    spy = ("import os\ntry:\n    open(os.path.join(os.environ['MINIDT_AUTOGRADER_ROOT'], 'source', 'kit.json'))\n"
           "except OSError as e:\n    print('refused:', e)\n")
    text = get_assignment(NAME).source(solution=True).replace("from typing import Any\n", "from typing import Any\n"
                                                              + spy, 1)
    results = autograder(tmp_path, kit, {"my_layernorm.py": text})
    assert "refused: reading" in results["output"] and "is not allowed while grading" in results["output"]
    assert results["score"] == results["max_score"]


def test_find_submission(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(UngradeableError, match="no layernorm.py and no .py file"):
        find_submission(str(tmp_path), NAME)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mine.py").write_text("")
    assert find_submission(str(tmp_path), NAME) == str(tmp_path / "sub" / "mine.py")
    (tmp_path / "other.py").write_text("")
    with pytest.raises(UngradeableError, match="2 .py files"):
        find_submission(str(tmp_path), NAME)
    (tmp_path / "layernorm.py").write_text("")
    assert find_submission(str(tmp_path), NAME) == str(tmp_path / "layernorm.py")


def test_a_broken_kit_still_writes_results(tmp_path):
    from minidt.coursework.gradescope import main as run_autograder

    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "kit.json").write_text("{}")
    assert run_autograder([str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["score"] == 0 and "the autograder failed: KeyError" in results["output"]


def test_hidden_inputs_come_from_the_seed_and_differ_from_the_public_ones():
    draw = get_assignment(NAME).units[0].draw

    def described(seed):
        return [c.describe() for c in draw_cases(draw, 4, seed)]

    assert described(None) == described(None)  # public: derandomized, the same on every run
    assert described(1234) == described(1234) != described(None)
    assert described(1234) != described(4321)


def test_kit_refuses_to_overwrite_and_bad_flags_exit_2(kit, tmp_path, capsys):
    assert main(["assignment", "gradescope", NAME, str(kit)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["assignment", "gradescope", NAME, str(tmp_path)]) == 2
    assert "got a directory" in capsys.readouterr().err
    assert main(["assignment", "gradescope", NAME, str(tmp_path / "k.zip"), "--backends", "numpy=x"]) == 2
    assert "--backends" in capsys.readouterr().err
    assert not (tmp_path / "k.zip").exists()


def test_the_kit_needs_a_source_tree(monkeypatch, tmp_path):
    from minidt.coursework import gradescope

    monkeypatch.setattr(gradescope, "MINIDT_DIR", str(tmp_path / "site-packages" / "minidt"))
    with pytest.raises(ValueError, match="make the kit from a checkout"):
        gradescope.build_wheel(str(tmp_path))
    assert shutil.which("bash")  # run_autograder and setup.sh are bash scripts


# --- an instructor's fresh virtual environment ------------------------------------------------------------------


def oldest_python() -> str:
    """An interpreter of the oldest Python minidt supports (pyproject's requires-python): the one these tests run
    on when it is that version (CI runs only that one), else pythonX.Y on PATH."""
    with open(CHECKOUT / "pyproject.toml", "rb") as f:
        spec = tomllib.load(f)["project"]["requires-python"]
    assert spec.startswith(">="), spec
    version = spec[2:].strip()
    base = getattr(sys, "_base_executable", sys.executable)
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return base
    found = shutil.which(f"python{version}")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"python{version}, the oldest Python minidt supports, is missing under CI=true")
        pytest.skip(f"python{version} (the oldest Python minidt supports) is not on PATH")
    return found


def linked_site(folder: Path, roots: list[str]) -> Path:
    """A folder holding only the distributions `roots` and their own requirements, linked from this environment:
    a fresh venv given it through a .pth file has those and nothing else, with no download."""
    folder.mkdir()
    todo, seen = list(roots), set()
    while todo:
        dist = metadata.distribution(todo.pop())
        name = dist.metadata["Name"].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)
    return folder


def instructor_requirements() -> list[str]:
    """What `pip install -e ".[coursework]"` installs: minidt's dependencies and its coursework extra."""
    reqs = map(Requirement, metadata.requires("minidt") or [])
    return [r.name for r in reqs if r.marker is None or r.marker.evaluate({"extra": "coursework"})]


def test_a_fresh_venv_of_the_oldest_python_makes_the_kit_sets_it_up_and_grades(tmp_path):
    """`python -m venv` with the pip and setuptools it ships (Python 3.11's: setuptools 65.5, no wheel): offline the
    kit cannot be built there, and the command says why in pip's own lines; with the package index it builds. Then
    the kit's own setup.sh installs it (offline: what grading needs is already there) and run_autograder grades the
    solution to full marks with only the packages grading needs."""
    python = oldest_python()
    root = tmp_path / "autograder"
    venv = root / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    pth = Path(site) / "linked.pth"  # the instructor's install, without the build requirements
    pth.write_text(f"{linked_site(tmp_path / 'instructor', instructor_requirements())}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MINIDT_BACKEND")}
    make = [str(venv / "bin" / "python"), "-m", "minidt", "assignment", "gradescope", NAME, str(tmp_path / "k.zip"),
            "--max-examples", "2", "--backends", "numpy,strict"]
    r = subprocess.run(make, cwd=CHECKOUT, env=offline(env), capture_output=True, text=True)  # the checkout's minidt
    assert r.returncode == 2, r.stderr
    assert "pip wheel's last lines:" in r.stderr and "No matching distribution found for setuptools" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("minidt assignment: error: pip wheel could not build minidt: ERROR: ") and "Traceback" \
        not in r.stderr, r.stderr
    r = subprocess.run(make, cwd=CHECKOUT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    top = 2 * get_assignment(NAME).max_score({"numpy": 1, "strict": 1})
    assert f"maximum score {top}" in r.stdout

    pth.write_text(f"{linked_site(tmp_path / 'grading', list(GRADING))}\n")  # Gradescope's: what grading needs
    with zipfile.ZipFile(tmp_path / "k.zip") as z:
        z.extractall(root / "source")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "python3").symlink_to(python)  # setup.sh's python3
    for script in ("setup.sh", "run_autograder"):
        (root / "source" / script).chmod(0o755)
    ours = {**offline(env), "MINIDT_AUTOGRADER_ROOT": str(root), "PATH": f"{bin_}{os.pathsep}{env['PATH']}"}
    r = subprocess.run(["bash", str(root / "source" / "setup.sh")], cwd=tmp_path, env=ours, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(venv / "bin" / "python"), "-c", "import minidt; print(minidt.__file__)"], cwd=tmp_path,
                       env=ours, capture_output=True, text=True, check=True)
    assert r.stdout.startswith(site)  # the kit's wheel, not the checkout
    (root / "submission").mkdir()
    (root / "submission" / f"{NAME}.py").write_text(get_assignment(NAME).source(solution=True))
    r = subprocess.run([str(root / "source" / "run_autograder")], cwd=tmp_path, env=ours, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == results["max_score"] == top, results["output"]
