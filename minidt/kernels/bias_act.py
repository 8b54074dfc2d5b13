"""Launcher of bias_act.cu: an activation fused with the bias add before it, forward and backward."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import blocks, function
from .layernorm import column_sum

ACTS = ("relu", "silu", "gelu", "gelu_new", "tanh")  # the kernel's act codes, in this order
FROM_OUTPUT = ("relu", "tanh")  # differentiated from their output; the rest from their input
THREADS = 256
PARTS = 256  # the backward's blocks: rows of partial bias gradients for column_sum


def forward(h: Any, bias: Any, name: str) -> tuple[Any, tuple]:
    """h (..., C) (written: it becomes h + bias, the pre-activation) -> out = f(h + bias), cache (the pre-activation
    or the output, as the twin keeps, and the name)."""
    import cupy

    if not h.flags.c_contiguous:
        h = cupy.ascontiguousarray(h)
    out = cupy.empty_like(h)
    if h.size:
        function("bias_act", "bias_act_forward", h.dtype)(
            (blocks(h.size, THREADS),), (THREADS,),
            (out, h, cupy.ascontiguousarray(bias), np.int64(h.size), np.int32(h.shape[-1]),
             np.int32(ACTS.index(name))))
    return out, ((out if name in FROM_OUTPUT else h), name)


def backward(dout: Any, cache: tuple) -> tuple[Any, Any]:
    """dout (..., C) -> dh (..., C) (the pre-activation's gradient), dbias (C,): two launches."""
    import cupy

    saved, name = cache
    dout = cupy.ascontiguousarray(dout)
    C = dout.shape[-1]
    N = dout.size // C if C else 0
    parts = max(1, min(PARTS, N))
    dh = cupy.empty_like(dout)
    partial = cupy.empty((parts, C), dout.dtype)
    dbias = cupy.empty((C,), dout.dtype)
    if C:
        function("bias_act", "bias_act_backward", dout.dtype)(
            (parts,), (min(THREADS, 32 * -(-C // 32)),),
            (dh, partial, dout, saved, np.int32(N), np.int32(C), np.int32(ACTS.index(name))))
        column_sum(dbias, partial)
    return dh, dbias
