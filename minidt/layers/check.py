"""Input checks shared by the layers: a wrong array gets a ValueError that names the argument, what was expected
and what was received, before any math runs (a broadcasting accident is a silent wrong answer)."""

from __future__ import annotations

from typing import Any

from ..backend import Backend, backend_of, dtype_name


def check_array(name: str, x: Any, backend: Backend, dtype: Any = None) -> None:
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
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {got}")
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
