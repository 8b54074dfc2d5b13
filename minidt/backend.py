"""Array backends: which array library the model runs on, and the few kernels the Array API lacks.

Model code never imports NumPy. It asks its inputs for their namespace (`xp = array_namespace(x)`) and uses
only the Array API standard on it. What the standard does not have lives here, once per backend:

- `erf(x)`                   the exact GELU needs it
- `scatter_add(out, idx, src)` the embedding backward: out[idx[i]] += src[i], repeated indices summed, the same
                             bits run after run (no atomic adds)
- `Generator`                 seeded random numbers (weight init on the host; dropout masks on the device)
- `to_numpy(x)`, `Backend.asarray(x)`  explicit transfers between host and device

Three backends, one `Backend` object each (`get_backend(name)` makes it once):

| name     | arrays                                        | for                                       |
|----------|-----------------------------------------------|-------------------------------------------|
| `numpy`  | NumPy 2.x                                     | the default; CPU                          |
| `cupy`   | CuPy                                          | GPU (extra `minidt[gpu-cuda12]` or `[gpu-cuda13]`) |
| `strict` | array_api_strict on the non-default device1   | tests: the stand-in for a GPU in CI       |

`strict` rejects NumPy-only calls, implicit conversion to NumPy and mixing with host arrays (an array created
without `device=` lands on the default device and cannot be combined with a device1 array): the same mistakes
that break a CuPy run. It does allow `float(x)`, `int(x)`, `bool(x)` (and so `if x > 0:`) on a device1 array, each
a device-to-host read that stalls a GPU: tests/test_sync.py counts them.

On CuPy, `array_namespace` gives array-api-compat's CuPy namespace with two corrections (`_cupy_namespace`):
creation functions honor `device=` (array-api-compat ignores it for CuPy, so on a machine with several GPUs
arrays landed on the current one), and `vecdot` is one reduction kernel (array-api-compat's is a batched matrix
product of 1 x C by C x 1 matrices on a conjugated copy).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import weakref
from typing import Any, Callable

import array_api_compat
import numpy as np

BACKENDS = ("numpy", "cupy", "strict")
DTYPES = ("float32", "float64")

_default: "Backend | None" = None
_made: "dict[str, Backend]" = {}  # one Backend per name: CuPy's driver is asked once per process, not per call


class Backend:
    """An array library plus a device. `xp` is its Array API namespace. `Backend(name)` is `get_backend(name)`:
    the one Backend of that name, made on first use."""

    def __new__(cls, name: str) -> "Backend":
        if name not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {name!r}")
        if name not in _made:  # a failed cupy load raises here and is not remembered: the next call tries again
            b = super().__new__(cls)
            b.name = name
            if name == "numpy":
                b.xp = np  # NumPy >= 2 implements the standard in its main namespace
                b.device = "cpu"
                keep_freed_memory()
            elif name == "cupy":
                b.xp, b.device = _load_cupy()
            else:
                import array_api_strict

                b.xp = array_api_strict
                b.device = array_api_strict.Device("device1")
            _made[name] = b
        return _made[name]

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    def __reduce__(self) -> tuple:  # a copy (deepcopy, pickle) is the same Backend
        return Backend, (self.name,)

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


CUPY_INSTALL = ("pip install 'minidt[gpu-cuda12]' or 'minidt[gpu-cuda13]', whichever CUDA major version your "
                "driver supports (nvidia-smi prints it): CuPy's wheels with their CUDA libraries")


def _load_cupy() -> tuple[Any, Any]:
    """(namespace, device) of the cupy backend, after one tiny kernel has run on the current GPU: a broken install
    (a CuPy built for another CUDA, missing cuBLAS or NVRTC) fails here with CuPy's own words, not at the first
    matrix product of a training run."""
    try:
        import cupy
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == "cupy":
            raise RuntimeError(f"backend 'cupy' needs CuPy, which is not installed: {CUPY_INSTALL}") from e
        raise RuntimeError(f"backend 'cupy': CuPy is installed but does not import. CuPy says: {e}") from e
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy is there but CUDA is not (no driver, no GPU)
        raise RuntimeError(f"backend 'cupy' needs a CUDA GPU and driver; CuPy reports: {e}") from e
    if n == 0:
        raise RuntimeError("backend 'cupy' needs a CUDA GPU; CuPy found none")
    try:
        got = first_kernel(cupy)
    except Exception as e:
        raise RuntimeError(f"backend 'cupy': CuPy found {n} GPU(s) but could not run a kernel on "
                           f"{cupy.cuda.Device()}. CuPy says: {type(e).__name__}: {e}. {CUPY_INSTALL}") from e
    if got != first_kernel(np):
        raise RuntimeError(f"backend 'cupy': a test kernel on {cupy.cuda.Device()} computed {got}, expected "
                           f"{first_kernel(np)}")
    return _cupy_namespace(cupy), cupy.cuda.Device()


def first_kernel(xp: Any) -> float:
    """sum(a @ a^T) for a = [[1, 2, 3], [4, 5, 6]] (155), computed by `xp`: on CuPy an elementwise kernel (NVRTC),
    a matrix product (cuBLAS), a reduction and the copy back; NumPy gives the answer to compare with."""
    a = xp.arange(6, dtype=xp.float32).reshape(2, 3) + 1
    return float((a @ a.T).sum())


def _cupy_namespace(cupy: Any) -> Any:
    """array_api_compat.cupy, corrected where it falls short on a GPU (a copy of the module's names, two replaced):

    - creation functions honor `device=`: array-api-compat ignores it for CuPy (it passes the check and creates on
      the current device), so `xp.zeros(..., device=device(x))` for an x on GPU 1 landed on GPU 0. Here each runs
      under `with device:`; `*_like` default to their argument's device, as the standard says.
    - `vecdot` is one reduction kernel, sum(x1 * x2) over the axis with no temporary. array-api-compat's (CuPy has
      none of its own) is `conj(x1[..., None, :]) @ x2[..., None]`: a copy of x1 (conj of a real array is a new
      array) and a batched matrix product of N products of 1 x C by C x 1, each too small to fill a GPU.
      LayerNorm's forward and backward and softmax's backward use it on every row."""
    import types

    import array_api_compat.cupy as compat

    ns = types.ModuleType("minidt.backend.cupy_namespace", _cupy_namespace.__doc__)
    ns.__dict__.update({name: getattr(compat, name) for name in compat.__all__})  # linalg, fft and the info too

    def on_device(f: Callable, like: bool = False) -> Callable:
        def created(*args: Any, device: Any = None, **kwargs: Any) -> Any:
            if device is None and like:
                device = args[0].device
            if device is None or device.id == cupy.cuda.runtime.getDevice():
                return f(*args, **kwargs)
            with device:
                return f(*args, **kwargs)
        return functools.wraps(f)(created)

    for name in ("arange", "empty", "eye", "full", "linspace", "ones", "zeros"):
        setattr(ns, name, on_device(getattr(compat, name)))
    for name in ("empty_like", "full_like", "ones_like", "zeros_like"):
        setattr(ns, name, on_device(getattr(compat, name), like=True))

    product_sum = cupy.ReductionKernel("T x1, T x2", "T y", "x1 * x2", "a + b", "y = a", "0", "minidt_vecdot")

    def vecdot(x1: Any, x2: Any, /, *, axis: int = -1) -> Any:
        """sum(x1 * x2, axis) in one kernel, for real arrays (minidt has no complex ones); broadcasts."""
        if x1.shape[axis] != x2.shape[axis]:
            raise ValueError(f"vecdot: x1 and x2 must have the same size along axis {axis}, got {x1.shape} and "
                             f"{x2.shape}")
        return product_sum(x1, x2, axis=axis)

    ns.vecdot = vecdot
    return ns


def get_backend(backend: "str | Backend | None" = None) -> Backend:
    """The Backend of that name (made once per process); None means the process default (`set_backend`, else
    $MINIDT_BACKEND, else numpy)."""
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
    """The Array API namespace of the arrays: NumPy itself for NumPy arrays (it implements the standard), the cupy
    backend's corrected namespace for CuPy arrays (`_cupy_namespace`), else array-api-compat's answer
    (array_api_strict)."""
    if all(isinstance(x, np.ndarray) for x in xs):
        return np
    xp = array_api_compat.array_namespace(*xs)
    return get_backend("cupy").xp if xp.__name__ == "array_api_compat.cupy" else xp


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
    # strict: a kernel runs on its device's memory, as a CuPy kernel reads GPU memory. array_api_strict keeps that
    # memory as a NumPy array (`_array`); reading it there is not a device-to-host read (to_numpy would count one).
    import scipy.special

    return b.xp.asarray(scipy.special.erf(x._array), device=device(x))


def scatter_add(out: Any, idx: Any, src: Any) -> Any:
    """out[idx[i], :] += src[i, :] for every i, repeated indices summed (not overwritten). In place; returns out.
    out (V, C), idx (N,) integer, src (N, C). The same bits on every run:

    - numpy: `np.add.at`, one row after another in index order.
    - cupy, strict: out += onehot(idx)^T @ src, a (V, N) one-hot matrix times src: one matrix product, which cuBLAS
      computes the same way every run. (`cupyx.scatter_add`, the obvious kernel, adds with atomics: float32 sums
      then differ from run to run, and a resumed run could not continue bit for bit.) It costs V * N * C
      multiply-adds and a V x N matrix, where atomics cost N * C: about 0.1 ms for the timestep embedding of a
      B 256, K 20, hidden 512 step on a current GPU (V = 1000), against a step of tens of milliseconds."""
    b = backend_of(out)
    if b.name == "numpy":
        np.add.at(out, idx, src)
        return out
    xp = b.xp
    onehot = xp.astype(xp.arange(out.shape[0], device=device(out))[:, None] == idx[None, :], out.dtype)  # V,N
    out += onehot @ src  # V,C
    return out


class Generator:
    """Seeded random numbers for one backend.

    Weights (`normal`, `uniform`) are drawn on the host by NumPy's PCG64 and moved to the device: one seed gives
    the same initial weights on every backend. Dropout masks (`bernoulli`) are drawn where the model runs: on the
    host for numpy, and on the GPU for cupy, by cuRAND's Philox4x32-10 (drawing them on the host meant 4 MB
    drawn and copied per paper-config step). So CuPy's masks differ from NumPy's; the same seed gives the same
    masks, run after run, on the same GPU model and CUDA version; `get_state` / `set_state` hold the GPU
    generator's position too, so a resumed run continues bit for bit. The strict backend, the GPU's stand-in,
    takes NumPy's random bits and compares them on its device: NumPy's masks, through the cupy code path."""

    def __init__(self, seed: "int | None" = None, backend: "str | Backend | None" = None):
        self.backend = get_backend(backend)
        seq = np.random.SeedSequence(seed)
        self.rng = np.random.Generator(np.random.PCG64(seq))  # = np.random.default_rng(seed)
        self.device_seed = int(seq.spawn(1)[0].generate_state(1, np.uint64)[0])  # cuRAND's, apart from the host's
        self.device_offset = 0  # how many 32-bit numbers cuRAND has drawn
        self._curand: "int | None" = None  # the cuRAND generator, made on the first draw on a GPU

    def normal(self, shape: tuple[int, ...], std: float, dtype: Any) -> Any:
        return self.backend.asarray(self.rng.normal(0.0, std, size=shape), dtype=dtype)

    def uniform(self, shape: tuple[int, ...], dtype: Any) -> Any:
        """Uniform on [0, 1)."""
        return self.backend.asarray(self.rng.random(size=shape), dtype=dtype)

    def bernoulli(self, shape: tuple[int, ...], prob: float) -> Any:
        """Booleans on the backend's device, each True with probability `prob` (to within 2^-32). Dropout draws
        one per activation, so this is hot: each entry is 32 random bits compared with prob * 2^32, half the work
        of a float64 uniform."""
        n = math.prod(shape)
        threshold = min(round(prob * 2**32), 2**32 - 1)
        if self.backend.name == "cupy":
            bits = self._device_bits(n)
        else:
            bits = self.backend.asarray(self.random_bits(n))
        xp = self.backend.xp
        return xp.reshape(bits < threshold, shape)

    def _device_bits(self, n: int) -> Any:
        """n uniform 32-bit integers drawn on the GPU by cuRAND (through CuPy's binding of its host API).
        Philox4x32-10 is counter-based: its position is (seed, offset), and setting the offset before each draw
        makes every draw a function of the seed and of how many numbers were drawn before it, nothing else."""
        import cupy
        from cupy.cuda import curand

        with self.backend.device:
            if self._curand is None:
                self._curand = curand.createGenerator(curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)
                weakref.finalize(self, curand.destroyGenerator, self._curand)
                curand.setPseudoRandomGeneratorSeed(self._curand, self.device_seed)
            bits = cupy.empty((n,), dtype=cupy.uint32)
            if n:
                curand.setGeneratorOffset(self._curand, self.device_offset)
                curand.generate(self._curand, bits.data.ptr, n)  # on the current stream
                self.device_offset += n
        return bits

    def __getstate__(self) -> dict:  # a copy makes its own cuRAND generator: a handle belongs to one object
        return {**vars(self), "_curand": None}

    def random_bits(self, n: int) -> np.ndarray:
        """The host stream's next n uniform 32-bit integers, (n,) uint32: two per 64-bit word of PCG64, so entry j
        is half of word j // 2 (minidt.parallel's replicas draw their rows of a batch's mask by that rule)."""
        return self.rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]

    def get_state(self) -> dict:
        """{"host": PCG64's state, "device": {"seed", "offset"}}: JSON-ready, for checkpoints."""
        return {"host": self.rng.bit_generator.state,
                "device": {"seed": self.device_seed, "offset": self.device_offset}}

    def set_state(self, state: dict) -> None:
        """Restore what get_state returned (or, from checkpoints written before masks were drawn on the GPU, PCG64's
        state alone: the GPU generator then starts from its seed)."""
        if "host" not in state:
            state = {"host": state, "device": {"seed": self.device_seed, "offset": 0}}
        self.rng.bit_generator.state = state["host"]
        self.device_seed, self.device_offset = int(state["device"]["seed"]), int(state["device"]["offset"])
        if self._curand is not None:
            from cupy.cuda import curand

            curand.setPseudoRandomGeneratorSeed(self._curand, self.device_seed)
