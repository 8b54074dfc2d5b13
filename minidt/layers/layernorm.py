"""LayerNorm over the last axis: biased variance, eps inside the square root (as torch.nn.LayerNorm).

Backward, with xhat = (x - mean) * rstd and g = dout * weight (N = C entries per row):
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
The two means are the gradient flowing through `mean` and through `rstd`; forgetting either is the classic bug.
"""

from __future__ import annotations

from typing import Any

from ..backend import Backend, array_namespace
from ..kernels.switch import kernel_path
from ..validate import check_last_dim, check_shape
from .module import Module, Parameter


def layernorm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, tuple]:
    """x (..., C), weight (C,), bias (C,) -> out (..., C)."""
    if kernel_path(x):  # the kernel path (MINIDT_KERNELS=1 on CuPy): one launch, the same cache
        from ..kernels import layernorm

        return layernorm.forward(x, weight, bias, eps)
    xp = array_namespace(x)
    C = x.shape[-1]
    mean = xp.mean(x, axis=-1, keepdims=True)  # ...,1
    out = x - mean  # ...,C  the centred input; becomes the output in place below (one array, not four)
    var = xp.vecdot(out, out, axis=-1)[..., None] / C  # ...,1 biased: divide by C, not C-1; vecdot: no x^2 array
    rstd = 1.0 / xp.sqrt(var + eps)  # ...,1 rstd, not std: backward needs 1/sigma twice
    out *= rstd  # ...,C  xhat
    out *= weight
    out += bias
    return out, (x, weight, mean, rstd)  # xhat is recomputed in backward: cheap, and saves a (...,C) array


def layernorm_backward(dout: Any, cache: tuple) -> tuple[Any, Any, Any]:
    """dout (..., C) -> dx (..., C), dweight (C,), dbias (C,)."""
    if kernel_path(dout):
        from ..kernels import layernorm

        return layernorm.backward(dout, cache)
    xp = array_namespace(dout)
    x, weight, mean, rstd = cache
    C = x.shape[-1]
    xhat = x - mean  # ...,C
    xhat *= rstd
    dweight = xp.sum(xp.reshape(dout * xhat, (-1, C)), axis=0)  # C
    dbias = xp.sum(xp.reshape(dout, (-1, C)), axis=0)  # C
    g = dout * weight  # ...,C  gradient w.r.t. xhat
    mean_g_xhat = xp.vecdot(g, xhat, axis=-1)[..., None] / C  # ...,1  vecdot: no g * xhat array
    dx = g - xp.mean(g, axis=-1, keepdims=True)  # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),
    xhat *= mean_g_xhat  # built in place: each line of the formula as a separate array would cost
    dx -= xhat  # three more (..., C) temporaries, and the backward pass is bound by memory traffic
    dx *= rstd
    return dx, dweight, dbias


class LayerNorm(Module):
    """torch.nn.LayerNorm(C, eps): weight ones, bias zeros."""

    def __init__(self, C: int, eps: float = 1e-5, *, backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        self.eps = eps
        self.weight = Parameter(self.backend.ones((C,), dtype))
        self.bias = Parameter(self.backend.zeros((C,), dtype))

    def forward(self, x: Any) -> Any:
        check_last_dim("x", x, self.weight.shape[0], self.dtype)
        out, cache = layernorm_forward(x, self.weight.data, self.bias.data, self.eps)
        self.keep(cache)
        return out

    def extra_repr(self) -> str:
        return f"{self.weight.shape}, eps={self.eps}"

    def backward(self, dout: Any) -> Any:
        cache = self.take_cache()
        check_shape("dout", dout, tuple(cache[0].shape), self.dtype)  # a broadcast dout would sum silently
        dx, dweight, dbias = layernorm_backward(dout, cache)
        self.weight.accumulate(dweight)
        self.bias.accumulate(dbias)
        return dx
