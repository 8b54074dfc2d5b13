"""Launcher of layernorm.cu: the same arguments and cache as layers/layernorm.py's pair, so either backward can
take either forward's cache."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import blocks, function, scalar

WARPS = 4  # rows per block: one warp each
PARTS = 128  # the backward's grid, in warps: partial dweight / dbias rows for column_sum to add


def forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, tuple]:
    """x (..., C) -> out (..., C), cache (x, weight, mean (..., 1), rstd (..., 1))."""
    import cupy

    x = cupy.ascontiguousarray(x)
    C = x.shape[-1]
    rows = x.size // C if C else 0
    out = cupy.empty_like(x)
    mean = cupy.empty((*x.shape[:-1], 1), x.dtype)
    rstd = cupy.empty_like(mean)
    if rows and C:
        function("layernorm", "layernorm_forward", x.dtype)(
            (-(-rows // WARPS),), (32 * WARPS,),
            (out, mean, rstd, x, cupy.ascontiguousarray(weight), cupy.ascontiguousarray(bias), np.int32(rows),
             np.int32(C), scalar(x.dtype, eps)))
    return out, (x, weight, mean, rstd)


def backward(dout: Any, cache: tuple) -> tuple[Any, Any, Any]:
    """dout (..., C) -> dx (..., C), dweight (C,), dbias (C,): two launches."""
    import cupy

    x, weight, mean, rstd = cache
    dout = cupy.ascontiguousarray(dout)
    C = x.shape[-1]
    rows = x.size // C if C else 0
    warps = min(PARTS, max(rows, 1))
    grid = -(-warps // WARPS)
    parts = grid * WARPS
    dx = cupy.empty_like(dout)
    partial = cupy.empty((parts, 2 * C), dout.dtype)  # each row: dweight's partial sums, then dbias's
    dweight_dbias = cupy.empty((2 * C,), dout.dtype)
    if C:
        function("layernorm", "layernorm_backward", dout.dtype)(
            (grid,), (32 * WARPS,),
            (dx, partial, dout, cupy.ascontiguousarray(x), cupy.ascontiguousarray(weight),
             cupy.ascontiguousarray(mean), cupy.ascontiguousarray(rstd), np.int32(rows), np.int32(C)))
        column_sum(dweight_dbias, partial)
    return dx, dweight_dbias[:C], dweight_dbias[C:]


def column_sum(out: Any, partials: Any) -> Any:
    """out (C,) = partials (parts, C) summed over parts, in order: the second launch of a column reduction."""
    parts, C = partials.shape
    threads = 128
    function("layernorm", "column_sum", partials.dtype)(
        (blocks(C, threads, 1 << 16),), (threads,), (out, partials, np.int32(parts), np.int32(C)))
    return out
