"""Launcher of adamw.cu: the gradient norm and the AdamW update over one flat buffer."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import blocks, function, scalar

THREADS = 256
_done: dict[int, Any] = {}  # per device: grad_norm's count of finished blocks (it resets it itself)


def grad_norm(flat: Any, max_norm: float, eps: float) -> Any:
    """flat (n,) -> (2,) on the device: the 2-norm of flat, and min(max_norm / (norm + eps), 1): one launch."""
    import cupy

    dev = cupy.cuda.Device().id
    if dev not in _done:
        _done[dev] = cupy.zeros((1,), cupy.uint32)
    grid = blocks(flat.size, THREADS, 256)
    out = cupy.empty((2,), flat.dtype)
    part = cupy.empty((grid,), flat.dtype)
    function("adamw", "grad_norm", flat.dtype)(
        (grid,), (THREADS,), (out, part, _done[dev], flat, np.int64(flat.size), scalar(flat.dtype, max_norm),
                              scalar(flat.dtype, eps)))
    return out


def adamw(param: Any, grad: Any, m: Any, v: Any, step: int, lr: float, beta1: float, beta2: float, eps: float,
          weight_decay: float) -> tuple[Any, Any, Any]:
    """As optim.adamw_step on flat (n,) arrays, in one launch: new param, m, v."""
    import cupy

    param, grad, m, v = (cupy.ascontiguousarray(a) for a in (param, grad, m, v))  # no copy when they are
    param_out, m_out, v_out = cupy.empty_like(param), cupy.empty_like(m), cupy.empty_like(v)
    t = param.dtype
    if param.size:
        function("adamw", "adamw", t)(
            (blocks(param.size, THREADS),), (THREADS,),
            (param_out, m_out, v_out, param, grad, m, v, np.int64(param.size), scalar(t, 1 - beta1),
             scalar(t, beta2), scalar(t, 1 - beta2), scalar(t, lr / (1 - beta1**step)),
             scalar(t, (1 - beta2**step) ** 0.5), scalar(t, eps), scalar(t, 1 - lr * weight_decay)))
    return param_out, m_out, v_out


def tiled_base(arrays: list[Any]) -> Any:
    """The flat array that `arrays` are consecutive views of, in order and covering it all (what clip_grad_norm_
    leaves in p.grad), or None: then AdamW can read it as it is, with no concatenation."""
    base = arrays[0].base
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    ptr = base.data.ptr
    for a in arrays:
        if a.base is not base or a.data.ptr != ptr or not a.flags.c_contiguous:
            return None
        ptr += a.nbytes
    return base if ptr == base.data.ptr + base.nbytes else None
