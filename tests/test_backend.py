"""backend.py: choosing a backend, transfers, dtypes, and the kernels the Array API lacks (erf, scatter_add,
seeded random numbers), each on every backend (the `backend` fixture), against PyTorch where it has the same
function; what `_load_cupy` says when CuPy is missing or broken."""

from __future__ import annotations

import math
import os
import sys

import array_api_strict

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidt
from conftest import rel_error
from layer_helpers import TORCH_TOL, is_on, seeds, twin_tol
from minidt import backend as backend_module
from minidt.backend import (Backend, Generator, array_namespace, backend_of, device, dtype_name, erf, get_backend,
                            scatter_add, set_backend, to_numpy)


@pytest.fixture
def fresh_default(monkeypatch):
    """Forget the process default, so the test sees $MINIDT_BACKEND afresh and leaves no default behind."""
    monkeypatch.setattr(backend_module, "_default", None)
    monkeypatch.delenv("MINIDT_BACKEND", raising=False)


def test_named_backends():
    numpy, strict = get_backend("numpy"), get_backend("strict")
    assert numpy.xp is np and numpy.device == "cpu"
    assert strict.xp is array_api_strict and strict.device == array_api_strict.Device("device1")
    assert strict.device != array_api_strict.Device("CPU_DEVICE")  # a non-default device: no accidental mixing
    assert get_backend(strict) is strict and Backend("strict") is strict  # one Backend per name


def test_unknown_backend_lists_the_choices():
    with pytest.raises(ValueError, match="backend: expected one of numpy, cupy, strict, got 'jax'"):
        get_backend("jax")


def test_process_default_from_environment_and_set_backend(fresh_default, monkeypatch):
    monkeypatch.setenv("MINIDT_BACKEND", "strict")
    assert get_backend().name == "strict"
    assert minidt.set_backend("numpy") == get_backend("numpy") and get_backend().name == "numpy"
    assert set_backend(get_backend("strict")).name == "strict" and get_backend(None).name == "strict"


def test_default_is_numpy(fresh_default):
    assert get_backend().name == "numpy"


@pytest.fixture
def no_cupy_backend_yet(monkeypatch):
    """A process where the cupy backend was never made (it is made once, then remembered) and CuPy never
    imported; afterwards, the real one (if any) is back and the test's stand-in is gone."""
    monkeypatch.setattr(backend_module, "_made", {k: v for k, v in backend_module._made.items() if k != "cupy"})

    def cupy_modules():
        return {name: m for name, m in sys.modules.items() if name == "cupy" or name.startswith("cupy.")}

    saved = cupy_modules()
    for name in saved:
        del sys.modules[name]
    yield
    for name in cupy_modules():
        del sys.modules[name]
    sys.modules.update(saved)


def test_cupy_without_cupy_says_what_to_install(no_cupy_backend_yet, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now raises ModuleNotFoundError
    with pytest.raises(RuntimeError, match=r"backend 'cupy' needs CuPy, which is not installed: pip install "
                                           r"'minidt\[gpu-cuda12\]' or 'minidt\[gpu-cuda13\]'"):
        get_backend("cupy")


def test_a_broken_cupy_is_reported_in_cupys_own_words(no_cupy_backend_yet, monkeypatch, tmp_path):
    """CuPy installed for the wrong CUDA raises its own ImportError ("Failed to import CuPy ..."): that text is the
    diagnosis, and "pip install" would be wrong advice."""
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(
        "raise ImportError('Failed to import CuPy.\\n\\nOriginal error:\\n  ImportError: libcudart.so.12: cannot "
        "open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match=r"(?s)CuPy is installed but does not import. CuPy says: Failed to import "
                                           r"CuPy.*libcudart.so.12") as e:
        get_backend("cupy")
    assert "pip install" not in str(e.value)


def test_the_first_kernel_is_checked_against_numpys_answer():
    """_load_cupy runs first_kernel on CuPy and compares with NumPy's: the same expression, exact in float32."""
    assert backend_module.first_kernel(np) == 155.0


def test_cupy_that_cannot_run_a_kernel_fails_at_once(no_cupy_backend_yet, monkeypatch, tmp_path):
    """A GPU is found, but the first kernel fails (no cuBLAS, no NVRTC: CuPy 14 wheels without their [ctk] extra):
    the backend is not made, and the message carries CuPy's error and what to install."""
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(
        "import types\n"
        "float32 = 'float32'\n"
        "cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1), "
        "Device=lambda *a: '<CUDA Device 0>')\n"
        "def arange(*a, **k):\n"
        "    raise RuntimeError('CUDA_ERROR_FILE_NOT_FOUND: libnvrtc.so.13 not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match=r"CuPy found 1 GPU\(s\) but could not run a kernel on <CUDA Device 0>\. "
                                           r"CuPy says: RuntimeError: CUDA_ERROR_FILE_NOT_FOUND: libnvrtc.so.13 "
                                           r"not found\. pip install 'minidt\[gpu-cuda12\]'"):
        get_backend("cupy")
    assert "cupy" not in backend_module._made


def test_dtypes():
    for name in ("numpy", "strict"):
        b = get_backend(name)
        assert b.dtype("float32") == b.xp.float32 and b.dtype(b.xp.float64) == b.xp.float64
        assert dtype_name(b.dtype("float32")) == "float32"
    with pytest.raises(ValueError, match="dtype: expected one of float32, float64, got 'float16'"):
        get_backend("numpy").dtype("float16")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_transfers_round_trip_and_keep_the_dtype(dtype, backend):
    x = np.random.default_rng(0).normal(size=(3, 4))
    s = backend.asarray(x, dtype)
    assert is_on(s, backend) and dtype_name(s.dtype) == dtype
    back = to_numpy(s)
    assert isinstance(back, np.ndarray) and back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, x.astype(dtype))
    assert backend.asarray(s) is s  # already there: no copy
    n = get_backend("numpy").asarray(s, dtype)
    assert isinstance(n, np.ndarray) and n.dtype == np.dtype(dtype)
    assert backend_of(s) is backend and backend_of(n).name == "numpy"
    assert backend_of(np.float64(1.0)).name == "numpy"  # NumPy returns 0-d results as scalars
    assert array_namespace(s) is backend.xp and array_namespace(n) is np
    with pytest.raises(TypeError, match="expected a NumPy, CuPy or array_api_strict array, got list"):
        backend_of([1.0])


def test_arrays_are_created_on_the_backends_device(backend):
    """Creation functions of the namespace put arrays where `device=` says (array-api-compat ignores it for CuPy:
    the cupy backend's namespace corrects that), and the backend's own zeros/ones use its device."""
    xp, d = backend.xp, backend.device
    x = backend.asarray(np.ones((2, 3)))
    for made in (backend.zeros((2,), "float32"), backend.ones((2,), "float64"), xp.zeros((2,), device=d),
                 xp.ones((2,), device=d), xp.arange(3, device=d), xp.full((2,), 1.0, device=d), xp.zeros_like(x),
                 xp.ones_like(x), xp.empty_like(x), xp.full_like(x, 2.0)):
        assert device(made) == device(x) == d


def test_to_numpy_takes_torch_tensors_lists_and_scalars(torch):
    np.testing.assert_array_equal(to_numpy(torch.arange(3.0)), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(to_numpy([1, 2]), [1, 2])
    assert to_numpy(2.5) == 2.5


def test_strict_rejects_what_breaks_a_gpu_run():
    """The point of the strict backend: host arrays, other devices and NumPy-only calls are errors there."""
    s = get_backend("strict").asarray(np.ones(3), "float64")
    with pytest.raises((TypeError, ValueError)):
        s + np.ones(3)  # mixing with a host array
    with pytest.raises(ValueError):
        s + array_api_strict.ones(3, dtype=array_api_strict.float64)  # the default device
    with pytest.raises((TypeError, ValueError, RuntimeError)):
        np.asarray(s)  # implicit conversion to NumPy
    assert not hasattr(array_api_strict, "einsum")  # only the standard's functions


@given(st.lists(st.floats(-6, 6), min_size=1, max_size=20))
def test_erf_matches_math_erf(backend, values):
    x = np.array(values)
    expected = np.array([math.erf(v) for v in values])
    assert rel_error(erf(x), expected) <= 1e-15
    s = erf(backend.asarray(x))
    assert is_on(s, backend)
    assert rel_error(to_numpy(s), erf(x)) <= (0.0 if backend.name != "cupy" else twin_tol(backend, "float64"))


@given(st.integers(**seeds), st.sampled_from([0.5, 3.0]))
def test_erf_matches_torch(torch, seed, scale):
    x = scale * np.random.default_rng(seed).normal(size=17)
    assert rel_error(erf(x), torch.special.erf(torch.from_numpy(x)).numpy()) <= TORCH_TOL


def test_erf_keeps_float32(backend):
    assert dtype_name(erf(backend.asarray(np.linspace(-2, 2, 5), "float32")).dtype) == "float32"


@st.composite
def scatters(draw):
    V, C, N = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(0, 12))
    idx = np.array(draw(st.lists(st.integers(0, V - 1), min_size=N, max_size=N)), dtype=np.int64)
    return V, C, idx, draw(st.integers(**seeds))


@given(scatters())
def test_scatter_add_sums_repeated_indices(backend, case):
    V, C, idx, seed = case
    rng = np.random.default_rng(seed)
    src, base = rng.normal(size=(len(idx), C)), rng.normal(size=(V, C))
    expected = base.copy()
    for i, j in enumerate(idx):  # the definition, one row at a time
        expected[j] += src[i]
    out = backend.asarray(base.copy())
    assert scatter_add(out, backend.asarray(idx), backend.asarray(src)) is out and is_on(out, backend)  # in place
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-15, atol=1e-15)


@given(scatters())
def test_scatter_add_matches_torch_index_add(torch, case):
    V, C, idx, seed = case
    rng = np.random.default_rng(seed)
    src, base = rng.normal(size=(len(idx), C)), rng.normal(size=(V, C))
    theirs = torch.from_numpy(base.copy()).index_add_(0, torch.from_numpy(idx), torch.from_numpy(src)).numpy()
    assert rel_error(scatter_add(base.copy(), idx, src), theirs) <= TORCH_TOL


def test_generator_is_seeded_and_the_same_on_every_backend(backend):
    """Weights are drawn on the host: one seed gives the same numbers on every backend."""
    a, b, s = Generator(3, "numpy"), Generator(3, "numpy"), Generator(3, backend)
    x, y, z = a.normal((4, 5), 0.5, "float64"), b.normal((4, 5), 0.5, "float64"), s.normal((4, 5), 0.5, "float64")
    np.testing.assert_array_equal(x, y)
    assert is_on(z, backend)
    np.testing.assert_array_equal(to_numpy(z), x)
    state = a.get_state()
    u = a.uniform((100,), "float32")
    a.set_state(state)
    np.testing.assert_array_equal(a.uniform((100,), "float32"), u)
    assert u.dtype == np.float32 and np.all((u >= 0) & (u < 1))
    assert not np.array_equal(Generator(4, "numpy").normal((4, 5), 0.5, "float64"), x)


def test_generator_seeds_its_gpu_stream_apart_from_the_host_one():
    """The device seed comes from the same SeedSequence, spawned: reproducible, different per seed, and the host
    draws are those of np.random.default_rng(seed) (the weights every earlier run got)."""
    g, h = Generator(3, "numpy"), Generator(3, "numpy")
    assert g.device_seed == h.device_seed != Generator(4, "numpy").device_seed
    np.testing.assert_array_equal(g.normal((5,), 1.0, "float64"), np.random.default_rng(3).normal(0.0, 1.0, 5))
    old_checkpoint_state = np.random.default_rng(3).bit_generator.state  # written before masks moved to the GPU
    h.set_state(old_checkpoint_state)
    assert h.get_state() == {"host": old_checkpoint_state, "device": {"seed": g.device_seed, "offset": 0}}


def test_generator_normal_has_the_asked_std():
    """N = 10^6 draws: the sample std of N(0, s^2) is within 6 * s / sqrt(2N) of s with probability 1 - 2e-9."""
    z = Generator(0).normal((1_000_000,), 0.02, "float64")
    assert abs(np.std(z) - 0.02) <= 6 * 0.02 / np.sqrt(2e6) and abs(np.mean(z)) <= 6 * 0.02 / 1e3
    assert np.all(Generator(0).normal((3,), 0.0, "float32") == 0)  # std 0: zeros (initializer_range = 0)


CHURN = """
import resource, sys
import numpy as np
if sys.argv[1] == "backend":
    import minidt
    minidt.get_backend("numpy")  # creating the NumPy backend is what tunes malloc
def step():  # a step's pattern: many 12 MB temporaries alive at once, then all freed
    xs = [np.ones((1500, 2000), np.float32) for _ in range(10)]
    del xs
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_freed_memory_stays_in_the_process():
    """NumPy's large temporaries are reused, not page-faulted in again on every step (finding 13 of
    benchmarks/README.md: 7,400 faults and 34 ms of kernel time in a 94 ms batched rollout step without it). Each
    count comes from a fresh interpreter with NumPy's huge-page advice off and no malloc tuning of its own, so the
    default's count is glibc's (~146,000 here) and not the environment's."""
    import platform
    import subprocess

    from minidt.backend import keep_freed_memory

    if not (sys.platform == "linux" and platform.libc_ver()[0] == "glibc"):
        assert keep_freed_memory() is False  # a no-op elsewhere, never an error
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "MINIDT_"))}
    env["NUMPY_MADVISE_HUGEPAGE"] = "0"

    def faults(mode: str, **extra: str) -> int:
        p = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True,
                           env={**env, **extra})
        return int(p.stdout)

    default, tuned = faults("default"), faults("backend")
    assert default > 50_000  # 5 steps x 120 MB of fresh 4 KiB pages
    assert tuned < default / 100, (default, tuned)
    assert faults("backend", MINIDT_KEEP_FREED_MEMORY="0") > 50_000  # the opt-out leaves glibc's default alone
