"""Is this input acceptable? The one place that answers, for everything that comes in: the model's inputs, the
layers' arrays, checkpoints, datasets.

Each check raises a ValueError whose message starts with the name it is given ("states", "state_dict['wpe.weight']",
"D4RL file 'x.hdf5': rewards"), then says what was expected and what was received, before any math runs (a
broadcasting accident is a silent wrong answer). Two kinds:
- values (`host_array`, `finite`, `binary`, `indices`) run on NumPy arrays, on the host, before anything is moved
  to a device: there, reading values back would cost a device synchronization;
- shapes, dtypes and backends (`check_array`, `check_shape`, `check_last_dim`) read no values, on any backend.
`model_input` is a model input's whole trip, both kinds and the one move to the device: the model calls it once per
input.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .backend import Backend, backend_of, dtype_name, is_backend_array, to_numpy

REAL_KINDS = "biuf"  # NumPy's dtype kinds for bool, signed and unsigned integers, floating point


def said(e: BaseException) -> str:
    """What a library's exception says, on one line ("OSError: Unable to open file ..."), for a message of ours."""
    return f"{type(e).__name__}: " + " ".join(str(e).split())


def host_array(name: str, x: Any) -> np.ndarray:
    """x (a NumPy array, nested list, scalar, torch tensor, or an array of another backend) -> a NumPy array of
    real numbers (bool, integer or floating point), on the host. Refuses ragged lists, strings, objects and
    complex numbers by name. A torch bfloat16 tensor (NumPy has no bfloat16) comes back as float32."""
    if type(x).__module__.startswith("torch"):  # no torch import: the tensor's own module tells
        x = _torch_to_numpy(name, x)
    try:
        a = np.asarray(to_numpy(x))
    except (ValueError, TypeError, RuntimeError) as e:  # ragged lists; objects NumPy cannot read
        raise ValueError(f"{name}: expected an array of real numbers, got a {type(x).__name__} that is not one "
                         f"({said(e)})") from None
    if a.dtype.kind not in REAL_KINDS:
        raise ValueError(f"{name}: expected real numbers (bool, integer or floating point), got dtype {a.dtype}")
    return a


def _torch_to_numpy(name: str, t: Any) -> np.ndarray:
    import torch

    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected an array or a tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise ValueError(f"{name}: expected a dense tensor, got layout {t.layout} (call .to_dense() first)")
    if t.is_complex():
        raise ValueError(f"{name}: expected real numbers (bool, integer or floating point), got dtype {t.dtype}")
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def finite(name: str, a: np.ndarray, dtype: "str | np.dtype | None" = None) -> np.ndarray:
    """a cast to `dtype` ("float32", ...; default: its own), refusing NaN and inf: those in `a` and those the cast
    makes (a float64 1e39 is inf in float32). The error names the first bad entry's index."""
    out = a
    if dtype is not None and a.dtype != np.dtype(dtype):
        with np.errstate(over="ignore", invalid="ignore"):
            out = a.astype(dtype)
    if out.dtype.kind != "f" or np.isfinite(out).all():
        return out
    i = tuple(int(j) for j in np.argwhere(~np.isfinite(out))[0])
    v = a[i]
    if np.isfinite(v):
        raise ValueError(f"{name}: expected finite numbers within {out.dtype}'s range (|x| <= "
                         f"{np.finfo(out.dtype).max:.4g}), got {v!r} at index {i}")
    raise ValueError(f"{name}: expected finite numbers, got {v} at index {i}")


def binary(name: str, a: np.ndarray) -> np.ndarray:
    """a must hold only 0 and 1 (an attention mask: 1 real, 0 padding)."""
    bad = (a != 0) & (a != 1)
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise ValueError(f"{name}: expected only 0 (padding) and 1 (real), got {a[i]} at index {i}")
    return a


def indices(name: str, a: np.ndarray, n: int, what: str) -> np.ndarray:
    """a must hold integers in [0, n) (n = the size `what` of the table they index)."""
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected an integer dtype, got {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"{name}: expected values in [0, {n - 1}] ({what} {n}), got values in "
                         f"[{a.min()}, {a.max()}]")
    return a


def one_hot(name: str, a: np.ndarray) -> np.ndarray:
    """a (..., n) must hold one-hot rows: each all 0 but one 1, or all 0 (padding, or the placeholder action a
    rollout feeds at the step it is predicting). A discrete model's actions come in this way."""
    bad = ((a != 0) & (a != 1)).any(axis=-1) | (a.sum(axis=-1) > 1)
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise ValueError(f"{name}: expected one-hot rows (a discrete model: one 1 and zeros, or all zeros at "
                         f"padding), got {a[i].tolist()} at index {i}")
    return a


# --- shapes, dtypes, backends: no values are read --------------------------------------------------------------

def shape_text(shape: tuple) -> str:
    """(None, 3) -> "(*, 3)"."""
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


def check_array(name: str, x: Any, backend: Backend, dtype: Any = None) -> None:
    """x must be an array of `backend` (and of `dtype`, when given)."""
    try:
        b = backend_of(x)
    except TypeError:
        b = None
    if b != backend:
        got = b.name if b is not None else type(x).__name__
        raise ValueError(f"{name}: expected an array of the {backend.name!r} backend, got {got} "
                         f"(convert with backend.asarray(...) or minidt.to_numpy(...))")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype_name(dtype)}, got {dtype_name(x.dtype)}")


def check_last_dim(name: str, x: Any, n: int, dtype: Any, backend: Backend | None = None) -> None:
    """x must be (..., n) of the given dtype (and backend, when given)."""
    if backend is not None:
        check_array(name, x, backend, dtype)
    if len(x.shape) < 1 or x.shape[-1] != n:
        raise ValueError(f"{name}: expected shape (..., {n}), got {tuple(x.shape)}")
    _check_dtype(name, x, dtype)


def check_shape(name: str, x: Any, shape: tuple, dtype: Any = None) -> None:
    """x must have exactly `shape` (None entries match any size)."""
    got = tuple(x.shape)
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        raise ValueError(f"{name}: expected shape {shape_text(shape)}, got {got}")
    if dtype is not None:
        _check_dtype(name, x, dtype)


def _check_dtype(name: str, x: Any, dtype: Any) -> None:
    if x.dtype == dtype:
        return
    if dtype_name(x.dtype) == dtype_name(dtype):  # float32 of another library: the array is on another backend
        raise ValueError(f"{name}: expected dtype {dtype_name(dtype)} of the layer's backend, got {dtype_name(dtype)} "
                         f"of the {_backend_name(x)!r} backend (convert with backend.asarray(...) or "
                         "minidt.to_numpy(...))")
    raise ValueError(f"{name}: expected dtype {dtype_name(dtype)}, got {dtype_name(x.dtype)}")


def _backend_name(x: Any) -> str:
    try:
        return backend_of(x).name
    except TypeError:
        return type(x).__name__


# --- a model input's whole trip -----------------------------------------------------------------------------------

def model_input(name: str, x: Any, shape: tuple, backend: Backend, dtype: Any,
                values: "Callable[[str, np.ndarray], np.ndarray] | None" = None) -> Any:
    """One input of the model, checked and moved once: -> an array of `backend` and `dtype`, of shape `shape`
    (None entries match any size). dtype int64 asks for integers (timesteps); a floating dtype takes any real
    numbers and casts them.

    A host input (NumPy array, list, torch tensor; on the numpy backend, every input) is checked on the host: real
    numbers, its shape, then `values(name, host)` (finite, binary, indices; None: any values, as gradients may
    hold), which may return it cast; then it is moved to the device. An array already on the model's device (CuPy,
    strict) gets its shape and dtype checked, never its values: reading them back would stall the GPU. Its values
    are the caller's to check."""
    integer = dtype_name(dtype) == "int64"
    if x is None:
        raise ValueError(f"{name}: expected {'integers' if integer else 'an array'} of shape {shape_text(shape)}, "
                         "got None")
    if backend.name != "numpy" and is_backend_array(x, backend):
        check_shape(name, x, shape)
        if integer and not backend.xp.isdtype(x.dtype, "integral"):
            raise ValueError(f"{name}: expected an integer dtype, got {x.dtype}")
        if not backend.xp.isdtype(x.dtype, ("real floating", "integral", "bool")):
            raise ValueError(f"{name}: expected real numbers, got dtype {x.dtype}")
        return backend.asarray(x, dtype)
    host = host_array(name, x)
    check_shape(name, host, shape)
    if values is not None:
        host = values(name, host)
    return backend.asarray(host, dtype)

