"""benchmarks/gpu_check.py, the prepared GPU check, in the mode CI can run: without CuPy it says so and runs its
parts on the strict backend. The parts that need a GPU (kernels, benchmark) report themselves skipped; the tests
part's selection (only the backend tests) is checked by collecting with its plugin. On a GPU machine the same
command is the check itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check, gpu_kernels

ROOT = Path(__file__).resolve().parents[1]


def test_without_a_gpu_it_says_so_and_checks_what_it_can_on_strict(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "device_backend", lambda: ("strict", "no GPU in this test"))
    monkeypatch.setattr(gpu_kernels, "TWIN_TESTS", ["tests/test_kernels_twins.py::test_layernorm"])  # CI runs the rest
    only = "environment,twins,parity,determinism,kernels,profile,benchmark"
    assert gpu_check.main(["--out", str(tmp_path), "--only", only]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device_backend"] == "strict" and report["cupy_unavailable"] == "no GPU in this test"
    parts = report["parts"]
    assert list(parts) == only.split(",")
    assert all(p["ok"] for p in parts.values()), parts
    assert parts["twins"]["twin_cases_run"]["gpu"] == 0 and parts["twins"]["twin_cases_run"]["cpu_shim"] > 0
    assert parts["parity"]["float64"]["gradients"]["worst"] <= 1e-10
    assert parts["determinism"]["B"]["bitwise_equal_to_A"] and parts["determinism"]["C (resumed at 3)"][
        "bitwise_equal_to_A"]
    for part in ("kernels", "profile", "benchmark"):
        assert "needs the GPU" in parts[part]["skipped"]
    assert (tmp_path / "readme_tables.md").read_text().startswith("GPU check of ")
    md = (tmp_path / "gpu_check.md").read_text()
    assert "No GPU check: CuPy is unavailable" in md and "| parity | yes |" in md


def test_a_part_that_breaks_is_reported_and_the_exit_status_is_1(tmp_path, monkeypatch, capsys):
    def broken(dev, why, out):
        raise ValueError("planted")

    monkeypatch.setattr(gpu_check, "device_backend", lambda: ("strict", "no GPU in this test"))
    monkeypatch.setitem(gpu_check.PART_FUNCTIONS, "parity", broken)
    assert gpu_check.main(["--out", str(tmp_path), "--only", "environment,parity"]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert not report["parts"]["parity"]["ok"] and "ValueError: planted" in report["parts"]["parity"]["error"]
    assert report["parts"]["environment"]["ok"]
    assert gpu_check.main(["--out", str(tmp_path), "--only", "parity,speed"]) == 2
    assert "--only: expected parts from environment," in capsys.readouterr().err


def test_the_tests_part_runs_only_the_backend_tests():
    p = subprocess.run([sys.executable, "-m", "pytest", "tests/test_linear.py", "--collect-only", "-q",
                        "-p", "no:cacheprovider", "-p", "benchmarks.gpu_check", "--backend", "strict"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    collected = [line for line in p.stdout.splitlines() if "::" in line]
    assert collected and all("[strict" in line for line in collected)
    assert any("test_backend_equals_numpy" in line for line in collected)
    assert not any("finite_differences" in line for line in collected)  # NumPy's own checks: deselected


def test_asking_for_a_backend_that_cannot_run_is_an_error(tmp_path):
    """MINIDT_BACKEND=cupy pytest on a machine without CuPy fails at once, saying why: never a green run that
    tested nothing on the GPU."""
    try:
        import minidt

        minidt.get_backend("cupy")
    except RuntimeError:
        pass
    else:
        pytest.skip("CuPy runs here")
    p = subprocess.run([sys.executable, "-m", "pytest", "tests/test_linear.py", "--collect-only", "-q",
                        "-p", "no:cacheprovider", "--backend", "cupy"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0 and "backend 'cupy' was asked for" in p.stdout + p.stderr
