"""Embedding: a table lookup forward, a scatter-add backward (a repeated index sums its gradients)."""

from __future__ import annotations

from typing import Any

from ..backend import Backend, Generator, array_namespace, device, is_backend_array, scatter_add, to_numpy
from ..kernels.switch import kernel_path
from ..validate import check_last_dim
from .module import Module, Parameter


def embedding_forward(ids: Any, weight: Any) -> tuple[Any, tuple]:
    """ids (...) integer, weight (V, C) -> out (..., C). ids may be one int, the same id for every token: out is
    then that row, (C,), for the caller to broadcast (the Decision Transformer's GPT-2 position ids are all 0)."""
    xp = array_namespace(weight)
    V, C = weight.shape
    if isinstance(ids, int):
        return weight[ids, :], (ids, weight.shape)  # C
    flat = xp.reshape(ids, (-1,))  # N
    out = xp.take(weight, flat, axis=0)  # N,C
    return xp.reshape(out, (*ids.shape, C)), (flat, weight.shape)


def embedding_backward(dout: Any, cache: tuple) -> Any:
    """dout (..., C) -> dweight (V, C). Rows never looked up get zero."""
    xp = array_namespace(dout)
    ids, (V, C) = cache
    if not isinstance(ids, int) and kernel_path(dout):  # one launch, no one-hot matrix, the twin's order of sums
        from ..kernels import embedding

        return embedding.backward(xp.reshape(dout, (-1, C)), ids, V)
    dweight = xp.zeros((V, C), dtype=dout.dtype, device=device(dout))  # V,C
    if isinstance(ids, int):  # one row looked up by every token: its gradient is the plain sum over them
        dweight[ids, :] = xp.sum(xp.reshape(dout, (-1, C)), axis=0)
        return dweight
    return scatter_add(dweight, ids, xp.reshape(dout, (-1, C)))


class Embedding(Module):
    """torch.nn.Embedding: weight (num_embeddings, embedding_dim), initialized N(0, std^2).

    Ids out of [0, num_embeddings) are an error, checked where that costs nothing: ids from the host (NumPy
    arrays, lists, an int) are checked there and then moved to the device. Ids already on a GPU are not checked:
    reading them back would stall it on every call (CuPy's `take` wraps an out-of-range id around silently, as a
    negative NumPy index does). The model makes or checks its own ids: GPT-2's position ids are the int 0, and
    the timesteps are checked on the host before they are moved (`DecisionTransformerModel.forward`)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, std: float = 0.02, *, gen: Generator | None = None,
                 backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        gen = gen or Generator(backend=self.backend)
        self.weight = Parameter(gen.normal((num_embeddings, embedding_dim), std, dtype))

    def forward(self, ids: Any) -> Any:
        """ids (...) integers -> (..., C); one int -> its row (C,) (see embedding_forward)."""
        V = self.weight.shape[0]
        if isinstance(ids, int):
            if not 0 <= ids < V:
                raise ValueError(f"ids: expected values in [0, {V - 1}], got {ids}")
        else:
            on_device = self.backend.name != "numpy" and is_backend_array(ids, self.backend)
            if not on_device:
                ids = to_numpy(ids)  # a host array, checked on the host
            xp = array_namespace(ids)
            if not xp.isdtype(ids.dtype, "integral"):
                raise ValueError(f"ids: expected an integer array, got dtype {ids.dtype}")
            if ids.size and not on_device:
                lo, hi = int(ids.min()), int(ids.max())
                if lo < 0 or hi >= V:
                    raise ValueError(f"ids: expected values in [0, {V - 1}], got values in [{lo}, {hi}]")
            ids = self.backend.asarray(ids)
        out, cache = embedding_forward(ids, self.weight.data)
        self.keep(cache)
        return out

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}"

    def backward(self, dout: Any) -> None:
        """Accumulates into weight.grad. Returns None: integer ids have no gradient."""
        ids, _ = cache = self.take_cache()
        check_last_dim("dout", dout, self.weight.shape[1], self.dtype)
        if not isinstance(ids, int) and dout.size != ids.shape[0] * self.weight.shape[1]:
            raise ValueError(f"dout: expected shape (..., {self.weight.shape[1]}) with one row per id "
                             f"({ids.shape[0]} ids), got {tuple(dout.shape)}")
        self.weight.accumulate(embedding_backward(dout, cache))
