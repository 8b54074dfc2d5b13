"""The Gradescope kit end to end: `minidt assignment gradescope` makes the zip, which is unzipped into a temporary
autograder root (MINIDT_AUTOGRADER_ROOT) and run as Gradescope runs it, with the minidt from the kit's own wheel:
the solution gets every point, public and hidden, the skeleton none, and results.json is always written."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile

import pytest

import minidt
from minidt.cli import main
from minidt.coursework import get_assignment
from minidt.coursework.checks import draw_cases
from minidt.coursework.gradescope import find_submission
from minidt.coursework.grader import MINIDT_DIR, UngradeableError

NAME = "layernorm"


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    out = tmp_path_factory.mktemp("kit") / "autograder.zip"
    assert main(["assignment", "gradescope", NAME, str(out), "--max-examples", "2", "--seed", "1234",
                 "--backends", "numpy=2,strict"]) == 0
    return out


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
        z.extract(config["wheel"], tmp_path)
    assert names == {"setup.sh", "run_autograder", "kit.json", config["wheel"]}
    for script in ("setup.sh", "run_autograder"):
        assert (info[script].external_attr >> 16) & 0o111  # executable
    assert config == {"assignment": NAME, "backends": {"numpy": 2, "strict": 1}, "max_examples": 2, "timeout": 10.0,
                      "hidden_seed": 1234, "hidden_visibility": "after_published", "minidt": minidt.__version__,
                      "wheel": f"minidt-{minidt.__version__}-py3-none-any.whl"}
    assert f'"$ROOT/source/{config["wheel"]}[coursework]"' in setup
    assert subprocess.run(["bash", "-n", "-c", setup]).returncode == 0  # it parses
    with zipfile.ZipFile(tmp_path / config["wheel"]) as wheel:  # the exact minidt the instructor tested
        for rel in ("coursework/grader.py", "coursework/sandbox.py", "layers/layernorm.py"):
            with open(os.path.join(MINIDT_DIR, rel), "rb") as f:
                assert wheel.read(f"minidt/{rel}") == f.read(), rel


def test_run_autograder_grades_the_solution_and_the_skeleton_public_and_hidden(kit, tmp_path):
    a = get_assignment(NAME)
    public = a.max_score({"numpy": 2, "strict": 1})
    (tmp_path / "solution").mkdir()
    results = autograder(tmp_path / "solution", kit, {f"{NAME}.py": a.source(solution=True)})
    assert results["score"] == results["max_score"] == 2 * public
    hidden = [t for t in results["tests"] if t["name"].endswith(", hidden]")]
    assert len(hidden) == len(results["tests"]) / 2 == 14
    assert {t["visibility"] for t in hidden} == {"after_published"}
    assert {t["visibility"] for t in results["tests"] if t not in hidden} == {"visible"}
    assert {t["status"] for t in results["tests"]} == {"passed"} and results["execution_time"] > 0
    assert "14 hidden checks" in results["output"]
    (tmp_path / "skeleton").mkdir()
    results = autograder(tmp_path / "skeleton", kit, {f"{NAME}.py": a.source(solution=False)})
    assert results["score"] == 0 and results["max_score"] == 2 * public and len(results["tests"]) == 28


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
