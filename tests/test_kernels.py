"""minidt/kernels, the parts CI checks without a GPU: every .cu source compiles with NVRTC for sm_80 and sm_90
(CuPy's binding of NVRTC and the nvidia-cuda-nvrtc wheel, no GPU or driver needed); the dropout hash against
SplitMix64's published values; the kernel path is off unless asked for, and its switch costs NumPy nothing.
The kernels against their twins on a GPU: test_kernels_gpu.py; their arithmetic on the CPU (g++ and a shim that
runs a grid serially): test_kernels_cpu.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import require
import minidt
from minidt import kernels, to_numpy
from minidt.kernels import switch
from minidt.backend import Generator
from minidt.layers.dropout import dropout_backward, dropout_forward, hash_keep, splitmix64

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("sm_80", "sm_90")  # A100 and H100/H200


def test_every_cu_source_is_listed_and_has_its_launcher():
    found = sorted(p.stem for p in kernels.HERE.glob("*.cu"))
    assert found == sorted(kernels.SOURCES)
    for name in kernels.SOURCES:
        assert (kernels.HERE / f"{name}.py").exists(), f"{name}.cu has no launcher {name}.py"
        assert '#include "common.cuh"' in (kernels.HERE / f"{name}.cu").read_text()
        assert "#include" not in kernels.source(name)  # headers inlined: NVRTC and CuPy's cache see their text


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", kernels.SOURCES)
def test_nvrtc_compiles(name, arch):
    """Each source, with both instantiations (float, double) of each of its kernels, as the launchers ask for
    them. A syntax or type error fails CI here, not on the next GPU run. Nothing is cached on disk."""
    nvrtc = require("cupy_backends.cuda.libs.nvrtc")
    prog = nvrtc.createProgram(kernels.source(name), f"{name}.cu", [], [])
    try:
        for expr in kernels.name_expressions(name):
            nvrtc.addNameExpression(prog, expr)
        try:
            nvrtc.compileProgram(prog, [f"--gpu-architecture={arch}", *kernels.NVRTC_OPTIONS])
        except nvrtc.NVRTCError:
            pytest.fail(f"NVRTC ({arch}) rejects {name}.cu:\n{nvrtc.getProgramLog(prog)}")
        lowered = [nvrtc.getLoweredName(prog, e) for e in kernels.name_expressions(name)]
        assert all(lowered) and len(set(lowered)) == len(lowered)
        assert f".target {arch}" in nvrtc.getPTX(prog).decode(errors="replace")
    finally:
        nvrtc.destroyProgram(prog)


def test_installing_cupy_without_a_gpu_changes_nothing_else(pytestconfig):
    """The test extra brings CuPy (for NVRTC). On a machine without a GPU the cupy backend still cannot run, says
    why (test_backend.py, test_gpu_check.py check the words), and is not among the backends the tests select."""
    try:
        minidt.get_backend("cupy")
    except RuntimeError as e:
        assert str(e).startswith("backend 'cupy' needs")
    else:
        pytest.skip("CuPy runs a kernel here: a GPU machine")
    assert "cupy" not in pytestconfig.backends


# --- the dropout hash --------------------------------------------------------------------------------------------

def splitmix64_reference(seed: int, count: int) -> list[int]:
    """Vigna's splitmix64.c, one output after another, in Python integers: the stream the counter-based form must
    reproduce."""
    x, out = seed, []
    for _ in range(count):
        x = (x + 0x9E3779B97F4A7C15) % 2**64
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        out.append(z ^ (z >> 31))
    return out


def test_splitmix64_gives_the_published_values():
    """SplitMix64's first outputs for seed 0 and seed 1234567 (the values its reference implementation prints),
    and the vectorized form equals the sequential one far into the stream."""
    assert splitmix64_reference(0, 3) == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert splitmix64_reference(1234567, 3) == [6457827717110365317, 3203168211198807973, 9817491932198370423]
    for seed in (0, 1234567, 2**64 - 1):
        got = splitmix64(seed, np.arange(1000, dtype=np.uint64)).tolist()
        assert got == splitmix64_reference(seed, 1000)


def test_hash_keep_is_counter_based_and_keeps_one_minus_p(backend):
    """Element i of a call at offset o is draw o + i: a call at offset 100 continues one at offset 0 of 100
    elements. About 1 - p are kept. The same on every backend (the twin of the kernels' mask)."""
    like = backend.zeros((1,), "float32")
    whole = to_numpy(hash_keep((300,), 0.25, 7, 0, like))
    parts = np.concatenate([to_numpy(hash_keep((100,), 0.25, 7, 0, like)),
                            to_numpy(hash_keep((200,), 0.25, 7, 100, like))])
    np.testing.assert_array_equal(whole, parts)
    kept = to_numpy(hash_keep((400, 500), 0.25, 7, 0, like)).mean()
    assert abs(kept - 0.75) < 6 * np.sqrt(0.75 * 0.25 / 200_000)
    assert not np.array_equal(whole, to_numpy(hash_keep((300,), 0.25, 8, 0, like)))  # the seed matters


# --- the switch ----------------------------------------------------------------------------------------------------

def test_the_kernel_path_is_off_by_default_and_never_takes_numpy(monkeypatch):
    monkeypatch.delenv("MINIDT_KERNELS", raising=False)
    code = "import minidt.kernels.switch as k; print(k.ENABLED)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "MINIDT_KERNELS": "1"})
    assert out.stdout.strip() == "True"
    monkeypatch.setattr(switch, "ENABLED", True)
    x = np.ones((2, 3))
    assert not switch.kernel_path(x)  # NumPy always runs the twin
    out, mask = dropout_forward(x, 0.5, Generator(0))
    np.testing.assert_array_equal(dropout_backward(np.ones_like(x), mask), mask)  # PCG64's mask, kept


def test_the_switch_costs_numpy_nothing_measurable():
    """The check every layer function makes first: one global read. Its cost per call against the smallest
    layer call it guards (a LayerNorm forward of one (20, 128) row block): far below 1 %."""
    import timeit

    from minidt.layers.layernorm import layernorm_forward

    x, w, b = np.ones((20, 128), np.float32), np.ones(128, np.float32), np.zeros(128, np.float32)
    check = min(timeit.repeat(lambda: switch.kernel_path(x), number=2000, repeat=5)) / 2000
    layer = min(timeit.repeat(lambda: layernorm_forward(x, w, b, 1e-5), number=200, repeat=5)) / 200
    assert check < 0.05 * layer, (check, layer)
