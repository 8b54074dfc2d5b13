"""The sandbox a student's file runs in: whatever the file does (hang, crash, exit, print a flood, borrow the
reference, patch the grader), the grader finishes, prints one result, and loses only the checks the file's code
touches. Each test plants one such file in the layernorm solution (a pair of functions with seven checks per
backend, and a question with one)."""

from __future__ import annotations

import json
import os
import time

import pytest

from minidt.cli import main
from minidt.coursework import get_assignment
from minidt.coursework.grader import MINIDT_DIR, UngradeableError, grade_file
from minidt.coursework.spec import PORTABLE

SOLUTION = get_assignment("layernorm").source(solution=True)
SKELETON = get_assignment("layernorm").source(solution=False)
FUTURE = "from __future__ import annotations\n"
FORWARD = [f"layernorm_forward: output vs reference [{b}]" for b in ("numpy", "strict")]


def write(tmp_path, text: str) -> str:
    path = tmp_path / "layernorm.py"
    path.write_text(text)
    return str(path)


def at_top(code: str, text: str = SOLUTION) -> str:
    return text.replace(FUTURE, FUTURE + code, 1)


def in_forward(code: str) -> str:
    return SOLUTION.replace("    xp = array_namespace(x)\n", "    xp = array_namespace(x)\n" + code, 1)


def in_backward(code: str) -> str:
    return SOLUTION.replace("    xp = array_namespace(dout)\n", "    xp = array_namespace(dout)\n" + code, 1)


def grade(tmp_path, text: str, max_examples: int = 2, **kw):
    """Graded on both backends (numpy,strict)."""
    kw.setdefault("backends", PORTABLE)
    report = grade_file(write(tmp_path, text), get_assignment("layernorm"), max_examples=max_examples, **kw)
    return {r.name: r for r in report.results}, report


def forward_only(results) -> None:
    """The forward's checks (and the question's) kept their points, every backward check lost its own."""
    assert [n for n, r in results.items() if (r.score == r.max_score) == n.startswith("layernorm_backward")] == []


def test_a_hang_costs_the_hung_function_only(tmp_path):
    started = time.monotonic()
    results, report = grade(tmp_path, in_backward("    while True:\n        pass\n"), timeout=2)
    forward_only(results)
    assert "layernorm_backward did not return within 2 s (--timeout)" in results[
        "layernorm_backward: dx vs reference [numpy]"].output
    assert time.monotonic() - started < 30  # one timeout, not one per call


def test_a_slow_function_spends_its_checks_time_and_keeps_what_it_finished(tmp_path):
    """Each call returns within --timeout, but the pair's calls together take longer than --timeout per check
    (7 checks: 7 s), so the last inputs are not graded and the first keep their points."""
    results, _ = grade(tmp_path, in_forward("    import time\n    time.sleep(0.6)\n"), max_examples=15, timeout=1,
                       backends={"numpy": 1})
    pair = [r for n, r in results.items() if n.startswith("layernorm_")]
    assert len(pair) == 7 and all(0 < r.score < r.max_score for r in pair)
    assert "used up their time (7 s: --timeout 1 s per check)" in results[FORWARD[0]].output


def test_a_crash_and_os_exit_cost_the_function_only(tmp_path):
    results, _ = grade(tmp_path, in_backward("    import os\n    os._exit(0)\n"))
    forward_only(results)
    assert "layernorm_backward ended the grading process (exit status 0)" in results[
        "layernorm_backward: dbias vs reference [strict]"].output
    results, _ = grade(tmp_path, in_backward("    import os, signal\n    os.kill(os.getpid(), signal.SIGSEGV)\n"))
    forward_only(results)
    assert "killed by signal SIGSEGV" in results["layernorm_backward: dx vs reference [numpy]"].output


def test_sys_exit_and_keyboard_interrupt_inside_a_function(tmp_path):
    for code, words in (("    import sys\n    sys.exit(0)\n", "raised SystemExit(0)"),
                        ("    raise KeyboardInterrupt\n", "raised KeyboardInterrupt")):
        results, _ = grade(tmp_path, in_backward(code))
        forward_only(results)
        assert words in results["layernorm_backward: dx vs reference [numpy]"].output


@pytest.mark.parametrize("code, words", [
    ("import sys\nsys.exit(0)\n", "importing it raised SystemExit(0)"),
    ("raise KeyboardInterrupt\n", "importing it raised KeyboardInterrupt"),
    ("while True:\n    pass\n", "importing it did not finish within 2 s"),
])
def test_exit_interrupt_or_hang_at_import_is_one_line_exit_2_and_one_json_document(tmp_path, capsys, code, words):
    path = write(tmp_path, at_top(code))
    assert main(["grade", path, "--timeout", "2", "--json"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and words in err and "Traceback" not in err
    out = json.loads(captured.out)
    assert out["score"] == 0 and words in out["output"]


def test_a_print_flood_is_captured_truncated_and_shown_in_its_checks(tmp_path, capsys):
    flood = "    print('x' * 2_000_000)\n    import os\n    os.write(1, b'around stdout\\n')\n"
    path = write(tmp_path, in_forward(flood))
    assert main(["grade", path, "--json", "--max-examples", "2"]) == 0
    out = json.loads(capsys.readouterr().out)  # one document, whatever the function printed
    tests = {t["name"]: t for t in out["tests"]}
    assert out["score"] == out["max_score"]
    shown = tests["layernorm_forward: output vs reference [numpy]"]["output"]
    assert "layernorm_forward printed 2000001 characters" in shown and len(shown) < 3000
    assert "printed" not in tests["layernorm_backward: dx vs reference [numpy]"]["output"]
    assert "around stdout" in out["output"]  # written to the file descriptor itself: the top-level output


def test_a_syntax_error_is_ungradeable(tmp_path):
    with pytest.raises(UngradeableError, match="line 2: syntax error"):
        grade(tmp_path, "# minidt assignment: layernorm\ndef f(:\n")


def test_changing_an_argument_in_place_is_caught_and_named(tmp_path):
    in_place = SOLUTION.replace("    out = x - mean  #", "    x -= mean  # the caller's x\n    out = x + 0.0  #")
    in_place = in_place.replace("return out, (x, weight, mean, rstd)", "return out, (x + mean, weight, mean, rstd)")
    results, _ = grade(tmp_path, in_place)
    for name in FORWARD:  # the values are right; the caller's x was written to
        assert results[name].score == 0
        assert results[name].output.startswith("layernorm_forward changed its argument x in place")
    assert results["layernorm_backward: dx vs reference [numpy]"].score == 1
    in_backward_cache = in_backward("    cache[0][...] = 0.0\n")  # the forward's x, which the cache holds
    results, _ = grade(tmp_path, in_backward_cache)
    assert "layernorm_backward changed its argument cache[0] in place" in results[
        "layernorm_backward: dx vs reference [strict]"].output


BORROWED = {
    "import": at_top("from minidt.layers.layernorm import layernorm_backward as reference\n"),
    "import of the package": at_top("import minidt.layers\n"),
    "importlib": at_top("import importlib\nreference = importlib.import_module('minidt.layers.layernorm')\n"),
    "import of the grader": at_top("from minidt.coursework import grader\n"),
    "the assignment's own module": at_top("from minidt.coursework.layernorm import layernorm_forward as reference\n"),
    "a new import system": at_top(
        "import sys\nsys.meta_path.pop(0)\nfor m in [m for m in sys.modules if m.startswith('minidt')]:\n"
        "    del sys.modules[m]\nimport minidt.layers.layernorm\n"),
}


@pytest.mark.parametrize("how", list(BORROWED))
def test_a_borrowed_import_is_refused_saying_what_is_allowed(tmp_path, capsys, how):
    path = write(tmp_path, BORROWED[how])
    assert main(["grade", path, "--json"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "importing it raised" in err and json.loads(captured.out)["score"] == 0
    if how != "a new import system":  # that one fails on reading minidt's files
        assert "cannot be imported while grading" in err and "minidt.backend (array_namespace)" in err
    else:
        assert "is not allowed while grading" in err


def test_borrowing_inside_a_function_or_by_reading_the_files_costs_that_function(tmp_path):
    ln = os.path.join(MINIDT_DIR, "layers", "layernorm.py")
    for code, words in (
            ("    import importlib\n    return importlib.import_module('minidt.layers.layernorm')"
             ".layernorm_forward(x, weight, bias, eps)\n", "minidt.layers cannot be imported"),
            ("    import importlib.util\n    spec = importlib.util.spec_from_file_location('ln', %r)\n"
             "    m = importlib.util.module_from_spec(spec)\n    spec.loader.exec_module(m)\n"
             "    return m.layernorm_forward(x, weight, bias, eps)\n" % ln, "is not allowed while grading"),
            ("    source = open(%r).read()\n" % ln, "is not allowed while grading")):
        results, _ = grade(tmp_path, in_forward(code))
        assert results[FORWARD[0]].score == 0 and words in results[FORWARD[0]].output, results[FORWARD[0]].output


def test_patching_the_grader_changes_nothing(tmp_path):
    """The grader is not in the student's process: patching what is there (the sandbox) only spoils the file's
    own results, and importing the grader fails."""
    patch = at_top("try:\n    import minidt.coursework.spec as spec\n    spec.Assignment.checks = lambda *a: []\n"
                   "except ImportError:\n    pass\nimport __main__\n"
                   "__main__.Sandbox.step = lambda self, *a: {'ok': True, 'value': None}\n"
                   "__main__.compare = lambda *a, **k: None\n", SKELETON)
    results, report = grade(tmp_path, patch)
    assert report.score == 0 and len(results) == 16


def test_what_a_graded_function_may_not_do(tmp_path):
    outside = tmp_path / "written.txt"
    for code, words in (("    open(%r, 'w').write('x')\n" % str(outside), "writing files is not allowed"),
                        ("    import os\n    os.kill(os.getppid(), 9)\n", "os.kill of another process"),
                        ("    import subprocess\n    subprocess.run(['true'])\n", "subprocess.Popen is not allowed"),
                        ("    import socket\n    socket.create_connection(('127.0.0.1', 9))\n", "socket."),
                        ("    import numpy\n    numpy.ones(10**10)\n", "MemoryError")):
        results, _ = grade(tmp_path, in_forward(code))
        assert results[FORWARD[0]].score == 0 and words in results[FORWARD[0]].output, results[FORWARD[0]].output
    assert not outside.exists()


def test_a_function_not_written_in_the_file_scores_zero_with_the_reason(tmp_path):
    text = SOLUTION + "\nexec('def layernorm_backward(dout, cache):\\n    return None')\n"
    results, _ = grade(tmp_path, text)
    forward_only(results)
    assert "layernorm_backward is not defined in layernorm.py" in results[
        "layernorm_backward: dx vs reference [numpy]"].output


def test_the_train_step_model_never_brings_a_graded_reference_along(tmp_path, monkeypatch):
    """train_step's child holds a real model, under a private package name; if the model ever imported a module
    holding a graded reference (minidt.losses, minidt.optim), the student could reach it: the sandbox refuses."""
    from minidt.coursework import grader

    request = grader._request

    def with_attention_graded(*args, **kwargs):
        r = request(*args, **kwargs)
        return {**r, "references": r["references"] + ["layers.attention"]}  # the model does import this one

    monkeypatch.setattr(grader, "_request", with_attention_graded)
    a = get_assignment("training")
    path = tmp_path / "training.py"
    path.write_text(a.source(solution=True))
    with pytest.raises(RuntimeError, match="the model imports layers.attention, which holds graded reference"):
        grade_file(str(path), a, max_examples=1)
