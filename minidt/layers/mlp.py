"""GPT-2's feed-forward network: c_fc (C -> n_inner), activation, c_proj (n_inner -> C), dropout."""

from __future__ import annotations

from typing import Any

from ..backend import Backend, Generator
from .activations import Activation
from .dropout import Dropout
from .linear import Conv1D
from .module import Module


class MLP(Module):
    def __init__(self, C: int, n_inner: int, activation: str, *, resid_pdrop: float = 0.0, std: float = 0.02,
                 proj_std: float | None = None, gen: Generator | None = None,
                 backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        gen = gen or Generator(backend=self.backend)
        self.c_fc = Conv1D(C, n_inner, std, gen=gen, backend=self.backend, dtype=dtype)
        self.act = Activation(activation)
        self.c_proj = Conv1D(n_inner, C, std if proj_std is None else proj_std, gen=gen, backend=self.backend,
                             dtype=dtype)
        self.dropout = Dropout(resid_pdrop, gen)

    def forward(self, x: Any) -> Any:
        """x (B, T, C) -> (B, T, C)."""
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))

    def backward(self, dout: Any) -> Any:
        self.require_forward()
        return self.c_fc.backward(self.act.backward(self.c_proj.backward(self.dropout.backward(dout))))
