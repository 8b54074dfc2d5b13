"""Run minidt/kernels/*.cu on the CPU: g++ compiles them against cuda_shim.h (a grid run serially, threads as
fibers), and a stand-in `cupy` module (NumPy arrays, the shim's kernels) lets the launchers run unchanged. Each
launch passes its arguments as cuLaunchKernel does, an array of pointers to values, so an argument of the wrong
size (an np.int64 where the kernel takes int) is caught here: `ShimKernel.__call__` checks each one against the
kernel's signature, read from the .cu source.

    lib = build(tmp_dir)           # g++, a few seconds
    with installed(lib, monkeypatch): kernels.layernorm.forward(x, w, b, 1e-5)   # NumPy in, NumPy out
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import types
from pathlib import Path
from typing import Any

import numpy as np

from minidt import kernels

HERE = Path(__file__).resolve().parent
SIZES = {"int": 4, "unsigned int": 4, "long long": 8, "unsigned long long": 8, "float": 4, "double": 8}


def signatures() -> dict[str, list[str]]:
    """kernel name -> its parameters' types (T not yet substituted), from every .cu source."""
    sigs = {}
    for name in kernels.SOURCES:
        for kernel, params in re.findall(r"__global__ void (\w+)\(([^)]*)\)", kernels.source(name)):
            sigs[kernel] = [re.sub(r"\s*\b\w+$", "", p.strip()) for p in params.split(",")]
    return sigs


def substitute(ty: str, t: str) -> str:
    """A parameter type with the template's T replaced by float or double."""
    return re.sub(r"\bT\b", t, ty)


def wrappers(sigs: dict[str, list[str]]) -> str:
    """One extern "C" entry per kernel and type: shim_NAME_float(grid, block, void** args)."""
    lines = [f'#include "{n}.cu"' for n in kernels.SOURCES]
    for kernel, types_ in sigs.items():
        for t in ("float", "double"):
            args = ", ".join(f"*({substitute(ty, t)}*)a[{i}]" for i, ty in enumerate(types_))
            lines.append(f'extern "C" void shim_{kernel}_{t}(unsigned grid, unsigned block, void** a) '
                         f"{{ shim_launch(grid, block, [=] {{ {kernel}<{t}>({args}); }}); }}")
    return "\n".join(lines) + "\n"


def build(tmp: Path) -> "ShimLib":
    gxx = shutil.which("g++")
    if gxx is None:
        raise FileNotFoundError("g++ is not installed (apt-get install g++): the kernels' CPU check compiles with it")
    sigs = signatures()
    src = tmp / "shim_kernels.cpp"
    src.write_text(wrappers(sigs))
    lib = tmp / "shim_kernels.so"
    p = subprocess.run([gxx, "-std=c++17", "-O1", "-shared", "-fPIC", "-include", str(HERE / "cuda_shim.h"),
                        "-I", str(kernels.HERE), str(src), "-o", str(lib)], capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"g++ could not compile the kernels against the shim:\n{p.stderr[-4000:]}")
    return ShimLib(ctypes.CDLL(str(lib)), sigs)


class ShimLib:
    def __init__(self, lib: ctypes.CDLL, sigs: dict[str, list[str]]):
        self.lib, self.sigs = lib, sigs

    def function(self, name: str, kernel: str, dtype: Any) -> "ShimKernel":
        """Stands in for minidt.kernels.function."""
        t = "double" if np.dtype(dtype) == np.float64 else "float"
        return ShimKernel(getattr(self.lib, f"shim_{kernel}_{t}"), kernel, self.sigs[kernel], t)


class ShimKernel:
    def __init__(self, fn: Any, kernel: str, types_: list[str], t: str):
        self.fn, self.kernel, self.types, self.t = fn, kernel, types_, t

    def __call__(self, grid: tuple, block: tuple, args: tuple) -> None:
        assert len(args) == len(self.types), f"{self.kernel}: {len(args)} arguments for {len(self.types)} parameters"
        keep, ptrs = [], (ctypes.c_void_p * len(args))()
        for i, (a, ty) in enumerate(zip(args, self.types)):
            ty = substitute(ty, self.t).replace("const ", "").strip()
            if ty.endswith("*"):
                assert isinstance(a, np.ndarray), f"{self.kernel} argument {i}: expected an array for {ty}, got {a!r}"
                assert a.dtype.itemsize == SIZES.get(ty[:-1].strip(), a.dtype.itemsize), (self.kernel, i, ty, a.dtype)
                value = ctypes.c_void_p(a.ctypes.data)
            else:
                assert isinstance(a, np.generic) and a.dtype.itemsize == SIZES[ty], \
                    f"{self.kernel} argument {i}: expected {ty} ({SIZES[ty]} bytes), got {a!r} ({type(a).__name__})"
                value = ctypes.create_string_buffer(a.tobytes(), a.dtype.itemsize)
            keep.append(value)
            ptrs[i] = ctypes.cast(ctypes.pointer(value), ctypes.c_void_p)
        assert len(grid) == len(block) == 1 and grid[0] >= 1 and 1 <= block[0] <= 1024 and block[0] % 32 == 0, \
            (self.kernel, grid, block)
        self.fn(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), ptrs)


def fake_cupy() -> types.ModuleType:
    """NumPy under CuPy's name, with the little of cupy.cuda the launchers touch."""
    m = types.ModuleType("cupy")
    m.__getattr__ = lambda name: getattr(np, name)
    m.cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0))
    return m
