"""Launcher of mse.cu: the masked MSE loss and its gradient in two launches."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import blocks, function

THREADS = 256


def masked_mse(pred: Any, target: Any, mask: Any) -> tuple[Any, Any]:
    """pred, target (B, K, d), mask (B, K) -> loss (0-d), dpred (B, K, d): as losses.masked_mse."""
    import cupy

    pred = cupy.ascontiguousarray(pred)
    target = cupy.ascontiguousarray(target.astype(pred.dtype, copy=False))
    real = cupy.ascontiguousarray((mask > 0).astype(pred.dtype) if mask.dtype != cupy.bool_ else
                                  mask.astype(pred.dtype))  # B,K of 0 / 1
    d = pred.shape[-1]
    rows = pred.size // d if d else 0
    grid = blocks(pred.size, THREADS, 256)
    dpred = cupy.empty_like(pred)
    partial = cupy.empty((2, grid), pred.dtype)  # sums of diff^2, counts of real rows
    loss = cupy.empty((), pred.dtype)
    function("mse", "mse_partials", pred.dtype)(
        (grid,), (THREADS,), (dpred, partial[0], partial[1], pred, target, real, np.int32(rows), np.int32(d)))
    function("mse", "mse_finish", pred.dtype)(
        (grid,), (THREADS,), (loss, dpred, partial[0], partial[1], np.int32(grid), np.int64(pred.size),
                              np.int32(d)))
    return loss, dpred
