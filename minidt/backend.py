"""Array backends: which array library the model runs on, and the few kernels the Array API lacks.

Model code never imports NumPy. It asks its inputs for their namespace (`xp = array_namespace(x)`) and uses
only the Array API standard on it. What the standard does not have lives here, once per backend:

- `erf(x)`                   the exact GELU needs it
- `scatter_add(out, idx, src)` the embedding backward: out[idx[i]] += src[i], repeated indices summed
- `Generator`                 seeded random numbers (weight init, dropout masks)
- `to_numpy(x)`, `Backend.asarray(x)`  explicit transfers between host and device

Three backends:

| name     | arrays                                        | for                                       |
|----------|-----------------------------------------------|-------------------------------------------|
| `numpy`  | NumPy 2.x                                     | the default; CPU                          |
| `cupy`   | CuPy                                          | GPU (optional extra `minidt[gpu]`)        |
| `strict` | array_api_strict on the non-default device1   | tests: the stand-in for a GPU in CI       |

`strict` rejects NumPy-only calls, implicit conversion to NumPy and mixing with host arrays (an array created
without `device=` lands on the default device and cannot be combined with a device1 array): the same mistakes
that break a CuPy run.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import array_api_compat
import numpy as np

BACKENDS = ("numpy", "cupy", "strict")
DTYPES = ("float32", "float64")

_default: "Backend | None" = None


class Backend:
    """An array library plus a device. `xp` is its Array API namespace."""

    def __init__(self, name: str):
        if name not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {name!r}")
        self.name = name
        if name == "numpy":
            self.xp = np  # NumPy >= 2 implements the standard in its main namespace
            self.device = "cpu"
            keep_freed_memory()
        elif name == "cupy":
            self.xp, self.device = _load_cupy()
        else:
            import array_api_strict

            self.xp = array_api_strict
            self.device = array_api_strict.Device("device1")

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Backend) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def dtype(self, dtype: Any) -> Any:
        """'float32' / 'float64' (or a dtype object of this namespace) -> this namespace's dtype."""
        name = dtype if isinstance(dtype, str) else dtype_name(dtype)
        if name not in DTYPES + ("int64", "int32", "bool"):
            raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
        return getattr(self.xp, name)

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """Host (NumPy, list, scalar) or same-backend array -> array of this backend, on its device."""
        if dtype is not None:
            dtype = self.dtype(dtype)
        if self.name == "numpy":
            return np.asarray(to_numpy(x), dtype=dtype)
        if is_backend_array(x, self):
            return x if dtype is None or x.dtype == dtype else self.xp.astype(x, dtype)
        return self.xp.asarray(np.asarray(to_numpy(x)), dtype=dtype, device=self.device)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.xp.zeros(shape, dtype=self.dtype(dtype), device=self.device)

    def ones(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.xp.ones(shape, dtype=self.dtype(dtype), device=self.device)


_malloc_tuned: "bool | None" = None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory in the process rather than hand it back to the kernel. Called once,
    when the NumPy backend is first created; Linux with glibc only (elsewhere, or with MINIDT_KEEP_FREED_MEMORY=0
    in the environment, it does nothing and returns False). Returns whether the setting took.

    Every NumPy array is a malloc. A training step or a batched rollout step allocates and frees arrays of 2-12 MB
    dozens of times; by default glibc serves blocks that size with a fresh mmap, or trims the heap once 128 KB+
    is free at its top, so the next step's arrays are new pages that the kernel must fault in and zero: 7,400
    page faults and 34 ms of kernel time in a 94 ms rollout step at batch 100 (benchmarks/README.md, finding 13).
    Two settings keep those pages: arrays up to 32 MiB come from the heap (M_MMAP_THRESHOLD, glibc's largest
    allowed value), and up to 1 GiB of free heap stays mapped (M_TRIM_THRESHOLD). Process-wide: every library in
    the process allocates through the same malloc, and the process keeps up to 1 GiB it no longer uses."""
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        if sys.platform.startswith("linux") and os.environ.get("MINIDT_KEEP_FREED_MEMORY", "1") != "0":
            import ctypes

            try:
                mallopt = ctypes.CDLL(None).mallopt  # AttributeError where libc has none
            except (OSError, AttributeError):
                return False
            M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from glibc's malloc.h; musl's mallopt ignores both (0)
            _malloc_tuned = bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))
    return _malloc_tuned


def _load_cupy():
    try:
        import cupy

        n = cupy.cuda.runtime.getDeviceCount()
    except ImportError as e:
        raise RuntimeError(
            "backend 'cupy' needs CuPy: pip install 'minidt[gpu]' (installs cupy-cuda12x; "
            "see https://docs.cupy.dev for other CUDA versions)"
        ) from e
    except Exception as e:  # CuPy is there but CUDA is not (no driver, no GPU)
        raise RuntimeError(f"backend 'cupy' needs a CUDA GPU and driver; CuPy reports: {e}") from e
    if n == 0:
        raise RuntimeError("backend 'cupy' needs a CUDA GPU; CuPy found none")
    import array_api_compat.cupy as xp

    return xp, cupy.cuda.Device()


def get_backend(backend: "str | Backend | None" = None) -> Backend:
    """A Backend by name; None means the process default (`set_backend`, else $MINIDT_BACKEND, else numpy)."""
    global _default
    if isinstance(backend, Backend):
        return backend
    if backend is not None:
        return Backend(backend)
    if _default is None:
        _default = Backend(os.environ.get("MINIDT_BACKEND", "numpy"))
    return _default


def set_backend(backend: "str | Backend") -> Backend:
    """Set the process default backend, used wherever `backend=None`. Returns it."""
    global _default
    _default = get_backend(backend)
    return _default


def backend_for_device(device: "str | Backend") -> Backend:
    """PyTorch's device names -> a Backend: "cpu" is numpy, "cuda" or "cuda:N" (N the current CUDA device) is
    cupy; backend names ("numpy", "cupy", "strict") and Backends pass through."""
    if isinstance(device, Backend) or device in BACKENDS:
        return get_backend(device)
    if device == "cpu":
        return get_backend("numpy")
    if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
        b = get_backend("cupy")
        index = device.partition(":")[2]
        if index and index != str(b.device.id):
            raise ValueError(f"device: minidt's cupy backend runs on the current CUDA device, cuda:{b.device.id}; "
                             f"got {device!r} (select it first with cupy.cuda.Device({index}).use())")
        return b
    raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:N' or a backend name ({', '.join(BACKENDS)}), "
                     f"got {device!r}")


def device_name(backend: Backend) -> str:
    """A backend's device by PyTorch's names: "cpu", "cuda:N"; the strict backend's is "strict:device1"."""
    if backend.name == "numpy":
        return "cpu"
    if backend.name == "cupy":
        return f"cuda:{backend.device.id}"
    return "strict:device1"


def array_namespace(*xs: Any) -> Any:
    """The Array API namespace of the arrays: NumPy itself for NumPy arrays (it implements the standard), else
    array-api-compat's answer (array_api_strict, array_api_compat.cupy)."""
    if all(isinstance(x, np.ndarray) for x in xs):
        return np
    return array_api_compat.array_namespace(*xs)


def backend_of(x: Any) -> Backend:
    """The Backend an array belongs to."""
    if isinstance(x, (np.ndarray, np.generic)):  # np.generic: NumPy turns 0-d results into scalars
        return get_backend("numpy")
    if array_api_compat.is_cupy_array(x):
        return get_backend("cupy")
    if type(x).__module__.startswith("array_api_strict"):
        return get_backend("strict")
    raise TypeError(f"expected a NumPy, CuPy or array_api_strict array, got {type(x).__name__}")


def is_backend_array(x: Any, backend: Backend) -> bool:
    try:
        return backend_of(x) == backend
    except TypeError:
        return False


def device(x: Any) -> Any:
    """The device an array lives on; pass it as `device=` when creating arrays next to it."""
    return array_api_compat.device(x)


def dtype_name(dtype: Any) -> str:
    """'float32', 'float64', ... for a dtype of any of the backends."""
    s = str(dtype)
    return s.rsplit(".", 1)[-1].replace("'>", "").replace("dtype('", "").replace("')", "")


def to_numpy(x: Any) -> np.ndarray:
    """Any backend's array (or a list, a scalar, a torch tensor on the CPU) -> a NumPy array on the host.
    The explicit device-to-host transfer: nothing else in minidt converts implicitly."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if type(x).__module__.startswith("array_api_strict"):
        import array_api_strict

        return np.from_dlpack(x.to_device(array_api_strict.Device("CPU_DEVICE")))
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


# ---------------------------------------------------------------------------------------------------------------
# Kernels the Array API standard lacks. Each takes and returns arrays of one backend.


def erf(x: Any) -> Any:
    """The error function, elementwise, same dtype as x."""
    b = backend_of(x)
    if b.name == "numpy":
        import scipy.special

        return scipy.special.erf(x)
    if b.name == "cupy":
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)
    # strict: a kernel is backend code, so it may cross to the host explicitly, as a CuPy kernel runs on the device
    import scipy.special

    return b.xp.asarray(scipy.special.erf(to_numpy(x)), device=device(x))


def scatter_add(out: Any, idx: Any, src: Any) -> Any:
    """out[idx[i], :] += src[i, :] for every i, repeated indices summed (not overwritten). In place; returns out.
    out (V, C), idx (N,) integer, src (N, C)."""
    b = backend_of(out)
    if b.name == "numpy":
        np.add.at(out, idx, src)
        return out
    if b.name == "cupy":
        import cupyx

        cupyx.scatter_add(out, idx, src)
        return out
    host = np.array(to_numpy(out))
    np.add.at(host, to_numpy(idx), to_numpy(src))
    out[...] = b.xp.asarray(host, device=device(out))
    return out


class Generator:
    """Seeded random numbers for one backend. Draws happen on the host (NumPy's PCG64) and are moved to the device,
    so one seed gives the same weights and dropout masks on every backend."""

    def __init__(self, seed: "int | None" = None, backend: "str | Backend | None" = None):
        self.backend = get_backend(backend)
        self.rng = np.random.default_rng(seed)

    def normal(self, shape: tuple[int, ...], std: float, dtype: Any) -> Any:
        return self.backend.asarray(self.rng.normal(0.0, std, size=shape), dtype=dtype)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Uniform on [0, 1)."""
        return self.backend.asarray(self.rng.random(size=shape), dtype=dtype)

    def bernoulli(self, shape: tuple[int, ...], prob: float) -> Any:
        """Booleans, each True with probability `prob` (to within 2^-32). Dropout draws one per activation, so
        this is hot: each entry takes 32 raw random bits (two per 64-bit word of the generator) compared with
        prob * 2^32, half the work of a float64 uniform, and a bool array is 1 byte per entry to move."""
        bits = self.random_bits(math.prod(shape))  # uniform 32-bit integers
        threshold = np.uint32(min(round(prob * 2**32), 2**32 - 1))
        return self.backend.asarray(np.reshape(bits < threshold, shape))

    def random_bits(self, n: int) -> np.ndarray:
        """The stream's next n uniform 32-bit integers, (n,) uint32 on the host: two per 64-bit word, so entry j
        is half of word j // 2 (minidt.parallel's replicas draw their rows of a batch's mask by that rule)."""
        return self.rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]

    def get_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
