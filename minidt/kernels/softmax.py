"""Launcher of softmax.cu: attention's scale + mask + softmax + dropout, forward and backward."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import function, scalar
from .residual import HashMask, draw, no_dropout

WARPS = 4  # rows per block: one warp each


def forward(scores: Any, bias: Any, scale: float, p: float, gen: Any) -> tuple[Any, Any, "HashMask | None"]:
    """scores (B, H, Tq, Tk), bias (B or 1, 1, Tq, Tk) additive and causal -> probs, dropped (probs after dropout;
    probs itself when p = 0), and the dropout's HashMask (None when p = 0)."""
    import cupy

    scores = cupy.ascontiguousarray(scores)
    B, H, Tq, Tk = scores.shape
    bias = cupy.ascontiguousarray(bias.astype(scores.dtype, copy=False))  # contiguous: strides in elements below
    rows = B * H * Tq
    probs = cupy.empty_like(scores)
    dropped = cupy.empty_like(scores) if p > 0.0 else probs
    mask = draw(gen, scores.size, p) if p > 0.0 else no_dropout()
    if rows and Tk:
        function("softmax", "softmax_forward", scores.dtype)(
            (-(-rows // WARPS),), (32 * WARPS,),
            (probs, dropped, scores, bias, np.int64(0 if bias.shape[0] == 1 else Tq * Tk), np.int64(Tk),
             np.int32(rows), np.int32(H), np.int32(Tq), np.int32(Tk), scalar(scores.dtype, scale), np.int32(1),
             *mask.args(scores.dtype), np.int32(p > 0.0)))
    return probs, dropped, (mask if p > 0.0 else None)


def backward(dprobs: Any, probs: Any, mask: "HashMask | None", scale: float) -> Any:
    """dprobs, probs (B, H, Tq, Tk) -> dscores: the dropout mask drawn again, softmax's Jacobian, the scale."""
    import cupy

    dprobs = cupy.ascontiguousarray(dprobs)
    Tk = dprobs.shape[-1]
    rows = dprobs.size // Tk if Tk else 0
    dscores = cupy.empty_like(dprobs)
    m = mask or no_dropout()
    if rows:
        function("softmax", "softmax_backward", dprobs.dtype)(
            (-(-rows // WARPS),), (32 * WARPS,),
            (dscores, dprobs, cupy.ascontiguousarray(probs), np.int32(rows), np.int32(Tk),
             scalar(dprobs.dtype, scale), *m.args(dprobs.dtype), np.int32(mask is not None)))
    return dscores


def attention_backward(dout: Any, cache: tuple) -> tuple[Any, Any, Any]:
    """attention_backward (layers/attention.py) on a cache its kernel path made: its four matrix products around
    one softmax_backward launch. dout (B, H, Tq, D) -> dq, dk, dv."""
    qs, ks, v, probs, (mask, probs_dropped), scale = cache
    dv = probs_dropped.swapaxes(-1, -2) @ dout  # B,H,Tk,D
    dscores = backward(dout @ v.swapaxes(-1, -2), probs, mask, scale)  # B,H,Tq,Tk
    return dscores @ ks, dscores.swapaxes(-1, -2) @ qs, dv
