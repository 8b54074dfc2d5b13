"""Embedding: a table lookup forward, a scatter-add backward (a repeated index sums its gradients)."""

from __future__ import annotations

from typing import Any

from ..backend import Backend, Generator, array_namespace, device, scatter_add, to_numpy
from .check import check_last_dim
from .module import Module, Parameter


def embedding_forward(ids: Any, weight: Any) -> tuple[Any, tuple]:
    """ids (...) integer, weight (V, C) -> out (..., C)."""
    xp = array_namespace(weight)
    V, C = weight.shape
    flat = xp.reshape(ids, (-1,))  # N
    out = xp.take(weight, flat, axis=0)  # N,C
    return xp.reshape(out, (*ids.shape, C)), (flat, weight.shape)


def embedding_backward(dout: Any, cache: tuple) -> Any:
    """dout (..., C) -> dweight (V, C). Rows never looked up get zero."""
    xp = array_namespace(dout)
    flat, (V, C) = cache
    dweight = xp.zeros((V, C), dtype=dout.dtype, device=device(dout))  # V,C
    return scatter_add(dweight, flat, xp.reshape(dout, (-1, C)))


class Embedding(Module):
    """torch.nn.Embedding: weight (num_embeddings, embedding_dim), initialized N(0, std^2)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, std: float = 0.02, *, gen: Generator | None = None,
                 backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        gen = gen or Generator(backend=self.backend)
        self.weight = Parameter(gen.normal((num_embeddings, embedding_dim), std, dtype))

    def forward(self, ids: Any) -> Any:
        xp = array_namespace(ids)
        V = self.weight.shape[0]
        if not xp.isdtype(ids.dtype, "integral"):
            raise ValueError(f"ids: expected an integer array, got dtype {ids.dtype}")
        if ids.size:  # explicit host read of two scalars: an index out of range must not wrap around on a GPU
            lo, hi = int(to_numpy(xp.min(ids))), int(to_numpy(xp.max(ids)))
            if lo < 0 or hi >= V:
                raise ValueError(f"ids: expected values in [0, {V - 1}], got values in [{lo}, {hi}]")
        out, cache = embedding_forward(ids, self.weight.data)
        self.keep(cache)
        return out

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}"

    def backward(self, dout: Any) -> None:
        """Accumulates into weight.grad. Returns None: integer ids have no gradient."""
        cache = self.take_cache()
        check_last_dim("dout", dout, self.weight.shape[1], self.dtype)
        if dout.size != cache[0].shape[0] * self.weight.shape[1]:
            raise ValueError(f"dout: expected shape (..., {self.weight.shape[1]}) with one row per id "
                             f"({cache[0].shape[0]} ids), got {tuple(dout.shape)}")
        self.weight.accumulate(embedding_backward(dout, cache))
