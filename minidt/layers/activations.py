"""The activations GPT-2 configs name, exactly as transformers' ACT2FN computes them, with their derivatives.

| name       | f(x)                                         | f'(x)                                               |
|------------|----------------------------------------------|-----------------------------------------------------|
| relu       | max(x, 0)                                    | 1 if x > 0 else 0                                   |
| silu       | x s(x), s = sigmoid                          | s (1 + x (1 - s))                                   |
| gelu       | x Phi(x) = x/2 (1 + erf(x/sqrt2))            | Phi(x) + x phi(x)                                   |
| gelu_new   | x/2 (1 + tanh(u)), u = c (x + 0.044715 x^3)  | (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 0.044715 x^2)    |
| tanh       | tanh(x)                                      | 1 - tanh(x)^2                                       |

c = sqrt(2/pi), Phi and phi are the standard normal CDF and density. Each backward takes the cache its forward
returned: the input x, or the output where the derivative is cheapest in terms of it (tanh).

`bias_act_forward` / `bias_act_backward` fuse the bias add before an activation (the MLP's c_fc) into it: one
kernel each way on the kernel path (minidt/kernels/bias_act.cu); here, the twin, the two steps one after the other.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from ..backend import array_namespace, erf
from ..kernels.switch import kernel_path
from ..validate import check_shape
from .module import Module

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def relu_forward(x: Any) -> tuple[Any, Any]:
    xp = array_namespace(x)
    out = xp.maximum(x, 0.0)  # maximum, not where: NumPy's where is ~10x slower on a large float32 array
    return out, out


def relu_backward(dout: Any, out: Any) -> Any:
    xp = array_namespace(dout)
    return dout * xp.astype(out > 0, dout.dtype)  # the slope, 1 or 0; a bool array must be cast to multiply


def silu_forward(x: Any) -> tuple[Any, Any]:
    xp = array_namespace(x)
    s = 1.0 / (1.0 + xp.exp(-x))
    return x * s, x


def silu_backward(dout: Any, x: Any) -> Any:
    xp = array_namespace(x)
    s = 1.0 / (1.0 + xp.exp(-x))  # recomputed: one exp is cheaper than keeping another array
    return dout * s * (1.0 + x * (1.0 - s))


def gelu_forward(x: Any) -> tuple[Any, Any]:
    return 0.5 * x * (1.0 + erf(x * INV_SQRT_2)), x


def gelu_backward(dout: Any, x: Any) -> Any:
    xp = array_namespace(x)
    cdf = 0.5 * (1.0 + erf(x * INV_SQRT_2))
    pdf = xp.exp(-0.5 * x * x) * INV_SQRT_2PI
    return dout * (cdf + x * pdf)


def gelu_new_forward(x: Any) -> tuple[Any, Any]:
    xp = array_namespace(x)
    t = xp.tanh(SQRT_2_OVER_PI * (x + 0.044715 * (x * x * x)))
    return 0.5 * x * (1.0 + t), x


def gelu_new_backward(dout: Any, x: Any) -> Any:
    xp = array_namespace(x)
    x2 = x * x
    t = xp.tanh(SQRT_2_OVER_PI * (x + 0.044715 * (x2 * x)))
    du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x2)
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


def tanh_forward(x: Any) -> tuple[Any, Any]:
    out = array_namespace(x).tanh(x)
    return out, out


def tanh_backward(dout: Any, out: Any) -> Any:
    return dout * (1.0 - out * out)


ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "relu": (relu_forward, relu_backward),
    "silu": (silu_forward, silu_backward),
    "gelu": (gelu_forward, gelu_backward),
    "gelu_new": (gelu_new_forward, gelu_new_backward),
    "tanh": (tanh_forward, tanh_backward),
}


def get_activation(name: str) -> tuple[Callable, Callable]:
    """The (forward, backward) pair of an activation by its transformers name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation_function: expected one of {', '.join(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def bias_act_forward(h: Any, bias: Any, name: str) -> tuple[Any, tuple]:
    """h (..., C) (a matrix product's output, overwritten), bias (C,) -> out = f(h + bias) (..., C), cache."""
    if kernel_path(h):
        from ..kernels import bias_act

        return bias_act.forward(h, bias, name)
    h += bias  # in place, as Conv1D adds its bias
    out, cache = get_activation(name)[0](h)
    return out, (cache, name)


def bias_act_backward(dout: Any, cache: tuple) -> tuple[Any, Any]:
    """dout (..., C) -> dh (..., C) (the gradient of h, and of h + bias), dbias (C,)."""
    if kernel_path(dout):
        from ..kernels import bias_act

        return bias_act.backward(dout, cache)
    xp = array_namespace(dout)
    saved, name = cache
    dh = get_activation(name)[1](dout, saved)
    return dh, xp.sum(xp.reshape(dh, (-1, dh.shape[-1])), axis=0)


class Activation(Module):
    """An elementwise activation by name; no parameters."""

    def __init__(self, name: str):
        self.training = True
        self.name = name
        self._forward, self._backward = get_activation(name)

    def forward(self, x: Any) -> Any:
        out, cache = self._forward(x)
        self.keep(cache)
        return out

    def extra_repr(self) -> str:
        return repr(self.name)

    def backward(self, dout: Any) -> Any:
        cache = self.take_cache()  # the input or the output: either has the output's shape and dtype
        check_shape("dout", dout, tuple(cache.shape), cache.dtype)
        return self._backward(dout, cache)
