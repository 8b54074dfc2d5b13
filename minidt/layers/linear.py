"""Affine maps in the two layouts the reference uses.

- Conv1D (GPT-2's attention and MLP): weight (in, out), out = x @ W + b.
- Linear (torch.nn.Linear, the Decision Transformer's embeddings and heads): weight (out, in), out = x @ W.T + b.

Both flatten the leading dimensions to one, so every product is a single 2-D matrix multiply (one BLAS call).
"""

from __future__ import annotations

from typing import Any

from ..backend import Backend, Generator, array_namespace
from ..validate import check_last_dim, check_shape
from .module import Module, Parameter


def conv1d_forward(x: Any, weight: Any, bias: Any) -> tuple[Any, tuple]:
    """x (..., I), weight (I, O), bias (O,) or None (the caller adds it: MLP's fused activation) -> out (..., O)."""
    xp = array_namespace(x)
    I, O = weight.shape
    x2 = xp.reshape(x, (-1, I))  # N,I
    out = x2 @ weight  # N,O
    if bias is not None:
        out += bias  # in place: the product is a new array, no need for another
    return xp.reshape(out, (*x.shape[:-1], O)), (x2, weight, x.shape)


def conv1d_backward(dout: Any, cache: tuple) -> tuple[Any, Any, Any]:
    """dout (..., O) -> dx (..., I), dweight (I, O), dbias (O,)."""
    xp = array_namespace(dout)
    x2, weight, x_shape = cache
    dout2 = xp.reshape(dout, (-1, weight.shape[1]))  # N,O
    dx = xp.reshape(dout2 @ weight.T, x_shape)  # N,I
    dweight = x2.T @ dout2  # I,O
    dbias = xp.sum(dout2, axis=0)  # O
    return dx, dweight, dbias


def linear_forward(x: Any, weight: Any, bias: Any) -> tuple[Any, tuple]:
    """x (..., I), weight (O, I), bias (O,) -> out (..., O)."""
    xp = array_namespace(x)
    O, I = weight.shape
    x2 = xp.reshape(x, (-1, I))  # N,I
    out = x2 @ weight.T  # N,O
    out += bias
    return xp.reshape(out, (*x.shape[:-1], O)), (x2, weight, x.shape)


def linear_backward(dout: Any, cache: tuple) -> tuple[Any, Any, Any]:
    """dout (..., O) -> dx (..., I), dweight (O, I), dbias (O,)."""
    xp = array_namespace(dout)
    x2, weight, x_shape = cache
    dout2 = xp.reshape(dout, (-1, weight.shape[0]))  # N,O
    dx = xp.reshape(dout2 @ weight, x_shape)  # N,I
    dweight = dout2.T @ x2  # O,I
    dbias = xp.sum(dout2, axis=0)  # O
    return dx, dweight, dbias


class Conv1D(Module):
    """GPT-2's Conv1D: weight (in_features, out_features). Initialized N(0, std^2), bias zero (the reference's
    scheme; PyTorch's own Conv1D default is the same with std 0.02)."""

    def __init__(self, in_features: int, out_features: int, std: float = 0.02, *, gen: Generator | None = None,
                 backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        gen = gen or Generator(backend=self.backend)
        self.weight = Parameter(gen.normal((in_features, out_features), std, dtype))
        self.bias = Parameter(self.backend.zeros((out_features,), dtype))

    def forward(self, x: Any) -> Any:
        check_last_dim("x", x, self.weight.shape[0], self.dtype)
        out, cache = conv1d_forward(x, self.weight.data, self.bias.data)
        self.keep(cache)
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[0]}, out_features={self.weight.shape[1]}"  # weight (in, out)

    def backward(self, dout: Any) -> Any:
        cache = self.take_cache()
        check_shape("dout", dout, (*cache[2][:-1], self.weight.shape[1]), self.dtype)  # the output's shape
        dx, dweight, dbias = conv1d_backward(dout, cache)
        self.weight.accumulate(dweight)
        self.bias.accumulate(dbias)
        return dx


class Linear(Module):
    """torch.nn.Linear: weight (out_features, in_features), initialized N(0, std^2) with zero bias (the
    transformers scheme, which replaces PyTorch's kaiming-uniform default in every pretrained model)."""

    def __init__(self, in_features: int, out_features: int, std: float = 0.02, *, gen: Generator | None = None,
                 backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        gen = gen or Generator(backend=self.backend)
        self.weight = Parameter(gen.normal((out_features, in_features), std, dtype))
        self.bias = Parameter(self.backend.zeros((out_features,), dtype))

    def forward(self, x: Any) -> Any:
        check_last_dim("x", x, self.weight.shape[1], self.dtype)
        out, cache = linear_forward(x, self.weight.data, self.bias.data)
        self.keep(cache)
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}"  # weight (out, in)

    def backward(self, dout: Any) -> Any:
        cache = self.take_cache()
        check_shape("dout", dout, (*cache[2][:-1], self.weight.shape[0]), self.dtype)  # the output's shape
        dx, dweight, dbias = linear_backward(dout, cache)
        self.weight.accumulate(dweight)
        self.bias.accumulate(dbias)
        return dx
