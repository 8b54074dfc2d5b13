"""Inverted dropout: zero each entry with probability p, scale the survivors by 1/(1-p), so the expected value
is unchanged and evaluation needs no rescaling. The backward pass multiplies by the same scaled mask."""

from __future__ import annotations

from typing import Any

from ..backend import Backend, Generator, array_namespace
from ..validate import check_shape
from .module import Module


def dropout_forward(x: Any, p: float, gen: Generator) -> tuple[Any, Any]:
    """x (...) -> out (...), mask (...) holding 0 or 1/(1-p). p = 0 returns x itself and mask None."""
    if p == 0.0:
        return x, None
    xp = array_namespace(x)
    keep = gen.bernoulli(tuple(x.shape), 1.0 - p)  # bool, P(keep) = 1 - p
    mask = xp.astype(keep, x.dtype)
    mask *= 1.0 / (1.0 - p)  # in place: the cast is already a new array
    return x * mask, mask


def dropout_backward(dout: Any, mask: Any) -> Any:
    return dout if mask is None else dout * mask


class Dropout(Module):
    """torch.nn.Dropout(p): active in training mode, the identity in eval mode and at p = 0. Draws its masks from
    `gen` (share one Generator across a model so one seed reproduces a whole training run)."""

    def __init__(self, p: float, gen: Generator | None = None, backend: "str | Backend | None" = None):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a dropout probability in [0, 1), got {p}")
        self.training = True
        self.p = p
        self.gen = gen or Generator(backend=backend)

    def forward(self, x: Any) -> Any:
        if not self.training or self.p == 0.0:
            self.keep((None,))  # the identity: backward passes dout through
            return x
        out, mask = dropout_forward(x, self.p, self.gen)
        self.keep((mask,))
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def backward(self, dout: Any) -> Any:
        (mask,) = self.take_cache()
        if mask is not None:  # dout * mask would broadcast a wrong-shaped dout silently
            check_shape("dout", dout, tuple(mask.shape), mask.dtype)
        return dropout_backward(dout, mask)
