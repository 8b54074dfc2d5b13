"""Shared test helpers, and the `backend` fixture.

`reference()` imports torch (and transformers): a test that needs the reference skips when it is missing on a
developer's machine, and FAILS when CI=true, so a broken install can never turn the parity suite green by skipping.

`backend`, as SciPy's array-API tests take `xp`: a test that takes it runs once per selected backend, gets that
Backend (`backend.xp`, `backend.asarray`, `backend.device`), and converts explicitly at its edges (inputs with
`backend.asarray`, results with `minidt.to_numpy` before comparing with NumPy or torch). Selected: every backend
named by `--backend NAME` (repeatable) or `MINIDT_BACKEND=NAME[,NAME...]`, else numpy, strict, and cupy when CuPy
finds a GPU. A backend asked for by name that cannot run (cupy without CuPy or a GPU) is an error, not a skip:
`MINIDT_BACKEND=cupy pytest` is how a GPU install is checked. `device_backend` is the same without numpy: for
tests that compare a backend with NumPy. During a test that takes either, it is also the process default (and $MINIDT_BACKEND, for subprocesses); every other test runs on NumPy whatever was selected:
those are the checks whose reference is NumPy itself (finite differences, host-side data code).
"""

from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import HealthCheck, settings

import minidt.backend
from minidt.gradcheck import numerical_grad, rel_error  # noqa: F401  (tests import them from here)

settings.register_profile("minidt", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("minidt")


def require(name: str):
    """Import a reference package, or skip (fail under CI=true)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"reference package {name!r} is missing under CI=true: {e}")
        pytest.skip(f"reference package {name!r} not installed: pip install -e '.[test]'")


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """Generated datasets go to a temporary cache, never the user's: one per test session, so each tier is
    generated once."""
    path = tmp_path_factory.mktemp("cache")
    old = os.environ.get("MINIDT_CACHE")
    os.environ["MINIDT_CACHE"] = str(path)
    yield path
    if old is None:
        del os.environ["MINIDT_CACHE"]
    else:
        os.environ["MINIDT_CACHE"] = old


@pytest.fixture
def torch():
    t = require("torch")
    t.set_default_dtype(t.float64)
    yield t
    t.set_default_dtype(t.float32)


# --- the backend fixture ---------------------------------------------------------------------------------------

def pytest_addoption(parser) -> None:
    parser.addoption("--backend", action="append", choices=minidt.backend.BACKENDS, default=None,
                     help="run the backend tests on this backend (repeatable; default: $MINIDT_BACKEND, "
                          "comma-separated, else numpy, strict and cupy when CuPy finds a GPU)")


def pytest_configure(config) -> None:
    names = config.getoption("--backend") or [n for n in os.environ.get("MINIDT_BACKEND", "").split(",") if n]
    if names:
        for name in names:
            try:
                minidt.backend.get_backend(name)
            except (RuntimeError, ValueError) as e:
                raise pytest.UsageError(f"backend {name!r} was asked for ($MINIDT_BACKEND or --backend) but cannot "
                                        f"run: {e}") from e
    else:
        names = ["numpy", "strict"] + (["cupy"] if _cupy_runs() else [])
    config.backends = list(dict.fromkeys(names))
    # Outside the backend tests NumPy is the default, for fixtures of every scope too (a module-scoped model is
    # made before any function-scoped fixture runs); _process_default_backend switches it for each backend test.
    minidt.backend._default = minidt.backend.get_backend("numpy")
    os.environ["MINIDT_BACKEND"] = "numpy"


def _cupy_runs() -> bool:
    try:
        minidt.backend.get_backend("cupy")
    except RuntimeError:
        return False
    return True


def pytest_generate_tests(metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", metafunc.config.backends, indirect=True)
    if "device_backend" in metafunc.fixturenames:  # empty when only numpy is selected: the test is skipped
        metafunc.parametrize("device_backend", [n for n in metafunc.config.backends if n != "numpy"], indirect=True)
    if "kernel_device" in metafunc.fixturenames:  # the kernels against their twins: see kernel_device
        gpu = "cupy" in metafunc.config.backends
        metafunc.parametrize("kernel_device", ["cpu_shim", pytest.param("gpu", marks=[] if gpu else pytest.mark.skip(
            reason="GPU part: needs the cupy backend (a GPU); CI checks these kernels by NVRTC compilation "
                   "(test_kernels.py) and on the CPU shim"))], indirect=True)


def pytest_report_header(config) -> str:
    return f"minidt backends: {', '.join(config.backends)}"


@pytest.fixture
def backend(request) -> minidt.backend.Backend:
    """Each selected backend, numpy included: for what must hold on every backend."""
    return minidt.backend.get_backend(request.param)


@pytest.fixture
def device_backend(request) -> minidt.backend.Backend:
    """Each selected backend but numpy: for comparisons with NumPy on the same weights and inputs (tolerances in
    layer_helpers.twin_tol)."""
    return minidt.backend.get_backend(request.param)


@pytest.fixture(scope="session")
def kernel_shim(tmp_path_factory):
    """minidt/kernels compiled by g++ against tests/kernel_shim/cuda_shim.h, once per session (in a temporary
    directory: nothing is cached across runs)."""
    from kernel_shim import build

    return build(tmp_path_factory.mktemp("kernel_shim"))


@pytest.fixture
def kernel_device(request, monkeypatch):
    """Where the kernels run in a twin test: "gpu" (the cupy backend, kernel path on; skipped without a GPU) or
    "cpu_shim" (g++-compiled, a grid run serially on NumPy arrays: the kernels' arithmetic and indexing, not the
    GPU). Gives `asarray` (host -> the kernels' arrays) and `launchers` (the kernels' launcher modules)."""
    import sys
    import types

    import numpy as np

    from minidt.kernels import adamw, bias_act, embedding, layernorm, mse, residual, softmax, switch

    launchers = types.SimpleNamespace(adamw=adamw, bias_act=bias_act, embedding=embedding, layernorm=layernorm,
                                      mse=mse, residual=residual, softmax=softmax)
    if request.param == "gpu":
        import cupy

        monkeypatch.setattr(switch, "ENABLED", True)
        monkeypatch.setattr(minidt.backend, "_default", minidt.backend.get_backend("cupy"))
        return types.SimpleNamespace(name="gpu", asarray=cupy.asarray, launchers=launchers)
    try:
        shim = request.getfixturevalue("kernel_shim")
    except FileNotFoundError as e:  # no g++: the CPU check is optional de-risking, the GPU run is the proof
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"under CI=true: {e}")
        pytest.skip(str(e))
    from kernel_shim import fake_cupy

    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    for module in vars(launchers).values():
        monkeypatch.setattr(module, "function", shim.function)
    monkeypatch.setattr(residual, "_unused", {})
    monkeypatch.setattr(adamw, "_done", {})
    return types.SimpleNamespace(name="cpu_shim", asarray=np.array, launchers=launchers)


@pytest.fixture(autouse=True)
def _process_default_backend(request, monkeypatch) -> None:
    """The backend under test is the process default (and $MINIDT_BACKEND, for subprocesses); NumPy elsewhere."""
    name = next((request.getfixturevalue(f).name for f in ("backend", "device_backend") if f in request.fixturenames),
                "numpy")
    monkeypatch.setattr(minidt.backend, "_default", minidt.backend.get_backend(name))
    monkeypatch.setenv("MINIDT_BACKEND", name)
