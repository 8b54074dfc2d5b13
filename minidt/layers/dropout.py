"""Inverted dropout: zero each entry with probability p, scale the survivors by 1/(1-p), so the expected value
is unchanged and evaluation needs no rescaling. The backward pass multiplies by the same scaled mask.

Two sources of masks. The array-op path (NumPy, strict, and CuPy by default) draws them from the Generator
(`gen.bernoulli`: PCG64 on the host, cuRAND on a GPU) and keeps the mask for backward. The kernel path (CuPy with
MINIDT_KERNELS=1, minidt/kernels) draws them from a counter-based hash of (seed, offset, element), `hash_keep`
below, and keeps only (seed, offset): backward draws the same mask again, and a step could be captured as a CUDA
graph. NumPy stays on PCG64: the hash costs a dozen array passes per mask on a CPU where PCG64 costs one, and
every seeded NumPy run (and every checkpoint resumed bit for bit) keeps its masks. `hash_keep` runs on any
backend: it is the twin the kernels are tested against. Both paths count draws in `gen.device_offset`, so a
checkpoint holds the position of either; a run resumed on the other path continues with that path's masks.
"""

from __future__ import annotations

import math
from typing import Any

from ..backend import Backend, Generator, array_namespace, device
from ..kernels.switch import dropout_threshold, kernel_path
from ..validate import check_shape
from .module import Module

GOLDEN, MIX1, MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB  # SplitMix64's constants


def splitmix64(seed: int, n: Any) -> Any:
    """The n-th output (n = 0, 1, ...) of SplitMix64 seeded with `seed`, for a uint64 array of n: Vigna's
    splitmix64.c adds GOLDEN to its state before each output, so output n mixes seed + (n + 1) GOLDEN. Each
    element stands alone (counter-based): the twin of splitmix64 in kernels/common.cuh. uint64 arithmetic wraps
    modulo 2^64, in NumPy as in C."""
    xp = array_namespace(n)
    golden, mix1, mix2, s = (xp.asarray(c, dtype=xp.uint64, device=device(n)) for c in (GOLDEN, MIX1, MIX2, seed))
    z = (n + 1) * golden + s  # constants as uint64 arrays: a Python int above 2^63 is no int64 on any backend
    z = (z ^ (z >> 30)) * mix1
    z = (z ^ (z >> 27)) * mix2
    return z ^ (z >> 31)


def hash_keep(shape: tuple[int, ...], p: float, seed: int, offset: int, like: Any) -> Any:
    """Booleans of `shape` on like's device: entry i (C order) is kept when the high 32 bits of SplitMix64's
    output offset + i fall below round((1 - p) 2^32), the threshold `Generator.bernoulli` uses (the kernels'
    dropout_keep)."""
    xp = array_namespace(like)
    n = xp.arange(math.prod(shape), dtype=xp.uint64, device=device(like)) + offset
    bits = splitmix64(seed, n) >> 32
    return xp.reshape(bits < dropout_threshold(p), shape)


def dropout_forward(x: Any, p: float, gen: Generator, residual: Any = None) -> tuple[Any, Any]:
    """x (...) -> out (...), mask (...) holding 0 or 1/(1-p); with a residual (x's shape), out = residual +
    dropout(x). p = 0 returns x (or residual + x) and mask None. On the kernel path the mask is a
    `kernels.residual.HashMask`, (seed, offset) for backward to draw it again."""
    if p == 0.0:
        return (x if residual is None else residual + x), None
    if kernel_path(x):
        from ..kernels import residual as k

        return k.forward(x, residual, p, gen)
    xp = array_namespace(x)
    keep = gen.bernoulli(tuple(x.shape), 1.0 - p)  # bool, P(keep) = 1 - p
    mask = xp.astype(keep, x.dtype)
    mask *= 1.0 / (1.0 - p)  # in place: the cast is already a new array
    out = x * mask
    return (out if residual is None else residual + out), mask


def dropout_backward(dout: Any, mask: Any) -> Any:
    """dout (...) -> dx (...), the gradient of the dropped input (a residual's is dout itself)."""
    if mask is None:
        return dout
    if kernel_path(dout):
        from ..kernels import residual as k

        return k.backward(dout, mask)
    return dout * mask


class Dropout(Module):
    """torch.nn.Dropout(p): active in training mode, the identity in eval mode and at p = 0. Draws its masks from
    `gen` (share one Generator across a model so one seed reproduces a whole training run). `forward(x, residual)`
    returns residual + dropout(x): a block's residual add, fused with the dropout before it on the kernel path;
    backward returns the gradient of x (the residual's is dout, which the block adds itself)."""

    def __init__(self, p: float, gen: Generator | None = None, backend: "str | Backend | None" = None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a dropout probability in [0, 1), got {p}")
        self.training = True
        self.p = p
        self.gen = gen or Generator(backend=backend)

    def forward(self, x: Any, residual: Any = None) -> Any:
        if residual is not None:
            check_shape("residual", residual, tuple(x.shape), x.dtype)  # a broadcast would hide a wrong shape
        out, mask = dropout_forward(x, self.p if self.training else 0.0, self.gen, residual)
        self.keep((mask, tuple(x.shape), x.dtype))
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def backward(self, dout: Any) -> Any:
        mask, shape, dtype = self.take_cache()
        check_shape("dout", dout, shape, dtype)  # dout * mask would broadcast a wrong-shaped dout silently
        return dropout_backward(dout, mask)
