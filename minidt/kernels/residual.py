"""Launcher of residual.cu: dropout (fused with the residual add after it) and its backward, the mask drawn from
the hash, twice. Also the one place that turns a Generator into the hash's (rng, offset), for softmax.py too."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import blocks, function, scalar
from .switch import dropout_threshold

THREADS = 256
_rng: "weakref.WeakKeyDictionary[Any, tuple[int, Any]]" = weakref.WeakKeyDictionary()
_unused: dict[int, Any] = {}  # per device: no_dropout's rng


@dataclass(frozen=True)
class HashMask:
    """What backward needs to draw a dropout mask again: the device array {seed, base}, the call's offset, p."""
    rng: Any
    offset: int
    p: float

    def args(self, dtype: Any) -> tuple:
        """(rng, offset, threshold, keep_scale): the kernels' dropout arguments."""
        return (self.rng, np.uint64(self.offset), np.uint32(dropout_threshold(self.p)),
                scalar(dtype, 1.0 / (1.0 - self.p)))


def no_dropout() -> HashMask:
    """Arguments for a kernel's dropout when it is off (p = 0): never read, but typed as the kernel declares them."""
    import cupy

    dev = cupy.cuda.Device().id
    if dev not in _unused:
        _unused[dev] = cupy.zeros((2,), cupy.uint64)
    return HashMask(_unused[dev], 0, 0.0)


def draw(gen: Any, n: int, p: float) -> HashMask:
    """The next n draws of gen on the kernel path: the offset where they start, which then advances by n (as
    torch's Philox offset advances per call). gen.device_offset is the same counter cuRAND's draws advance, so a
    checkpoint's generator state holds it. rng = {seed, 0} on the GPU, made once per generator and seed."""
    import cupy

    seed = gen.device_seed
    made = _rng.get(gen)
    if made is None or made[0] != seed:
        made = _rng[gen] = (seed, cupy.asarray(np.array([seed, 0], dtype=np.uint64)))
    mask = HashMask(made[1], gen.device_offset, p)
    gen.device_offset += n
    return mask


def forward(y: Any, residual: Any, p: float, gen: Any) -> tuple[Any, HashMask]:
    """residual + dropout(y) (residual None: dropout(y)); y and residual contiguous, one shape."""
    import cupy

    y = cupy.ascontiguousarray(y)
    residual = None if residual is None else cupy.ascontiguousarray(residual)
    out = cupy.empty_like(y)
    mask = draw(gen, y.size, p)
    if y.size:
        function("residual", "residual_dropout_forward", y.dtype)(
            (blocks(y.size, THREADS),), (THREADS,),
            (out, y if residual is None else residual, y, np.int64(y.size), *mask.args(y.dtype),
             np.int32(residual is not None)))  # without a residual, y stands in for it, unread
    return out, mask


def backward(dout: Any, mask: HashMask) -> Any:
    """dout * the forward's mask, drawn again."""
    import cupy

    dout = cupy.ascontiguousarray(dout)
    dy = cupy.empty_like(dout)
    if dout.size:
        function("residual", "dropout_backward", dout.dtype)(
            (blocks(dout.size, THREADS),), (THREADS,), (dy, dout, np.int64(dout.size), *mask.args(dout.dtype)))
    return dy
