"""GPT-2's feed-forward network: c_fc (C -> n_inner), activation, c_proj (n_inner -> C), dropout.

On the kernel path (MINIDT_KERNELS=1 on CuPy) c_fc's bias add moves into the activation's kernel
(`bias_act_forward`): c_fc's matrix product runs here, and the gradients go to c_fc's parameters from here."""

from __future__ import annotations

from typing import Any

from ..backend import Backend, Generator, array_namespace
from ..kernels.switch import kernel_path
from .activations import Activation, bias_act_backward, bias_act_forward
from .dropout import Dropout
from .linear import Conv1D, conv1d_forward
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

    def forward(self, x: Any, residual: Any = None) -> Any:
        """x (B, T, C) -> (B, T, C); plus `residual` (B, T, C) when given (the block's residual add)."""
        if kernel_path(x):
            h, fc_cache = conv1d_forward(x, self.c_fc.weight.data, None)  # B,T,n_inner without the bias
            a, act_cache = bias_act_forward(h, self.c_fc.bias.data, self.act.name)
            self.keep((fc_cache, act_cache))
            return self.dropout(self.c_proj(a), residual)
        self.keep(None)
        return self.dropout(self.c_proj(self.act(self.c_fc(x))), residual)

    def backward(self, dout: Any) -> Any:
        """dout (B, T, C) -> dx (B, T, C), the gradient of x alone (a residual's is dout)."""
        self.require_forward()
        fused, self.cache = getattr(self, "cache", None), None
        da = self.c_proj.backward(self.dropout.backward(dout))
        if fused is None:
            return self.c_fc.backward(self.act.backward(da))
        (x2, weight, x_shape), act_cache = fused
        xp = array_namespace(da)
        dh, dbias = bias_act_backward(da, act_cache)
        dh2 = xp.reshape(dh, (-1, weight.shape[1]))  # N,n_inner
        self.c_fc.weight.accumulate(x2.T @ dh2)
        self.c_fc.bias.accumulate(dbias)
        return xp.reshape(dh2 @ weight.T, x_shape)
