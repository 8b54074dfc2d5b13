"""The pre-LN GPT-2 block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x)).

Backward runs the two residual steps in reverse: the gradient reaches x both straight down the residual path
and through the branch, and the two add. Each branch does its residual add itself, in its last dropout
(`residual=x`): on the kernel path that is one launch, the dropout and the add fused."""

from __future__ import annotations

from typing import Any

from ..backend import Backend, Generator
from .attention import CausalSelfAttention
from .layernorm import LayerNorm
from .mlp import MLP
from .module import Module


class Block(Module):
    def __init__(self, C: int, n_head: int, *, n_inner: int | None = None, activation: str = "relu",
                 layer_norm_epsilon: float = 1e-5, attn_pdrop: float = 0.0, resid_pdrop: float = 0.0,
                 scale_attn_weights: bool = True, scale_attn_by_inverse_layer_idx: bool = False,
                 layer_idx: int = 0, reorder_and_upcast_attn: bool = False, std: float = 0.02,
                 proj_std: float | None = None, gen: Generator | None = None,
                 backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        gen = gen or Generator(backend=self.backend)
        kw = dict(gen=gen, backend=self.backend, dtype=dtype)
        self.ln_1 = LayerNorm(C, layer_norm_epsilon, backend=self.backend, dtype=dtype)
        self.attn = CausalSelfAttention(
            C, n_head, attn_pdrop=attn_pdrop, resid_pdrop=resid_pdrop, scale_attn_weights=scale_attn_weights,
            scale_attn_by_inverse_layer_idx=scale_attn_by_inverse_layer_idx, layer_idx=layer_idx,
            reorder_and_upcast_attn=reorder_and_upcast_attn, std=std, proj_std=proj_std, **kw)
        self.ln_2 = LayerNorm(C, layer_norm_epsilon, backend=self.backend, dtype=dtype)
        self.mlp = MLP(C, n_inner or 4 * C, activation, resid_pdrop=resid_pdrop, std=std, proj_std=proj_std, **kw)

    def forward(self, x: Any, attention_mask: Any = None, bias: Any = None, past_kv: tuple | None = None,
                use_cache: bool = False) -> tuple[Any, Any, tuple | None]:
        """x (B, T, C) -> out (B, T, C), attention weights, present (k, v) or None. Masks as in attention."""
        x, probs, present = self.attn(self.ln_1(x), attention_mask, bias, past_kv, use_cache, residual=x)  # x + a
        x = self.mlp(self.ln_2(x), residual=x)  # x + mlp(ln_2(x))
        return x, probs, present

    def backward(self, dout: Any) -> Any:
        self.require_forward()
        dx = dout + self.ln_2.backward(self.mlp.backward(dout))
        return dx + self.ln_1.backward(self.attn.backward(dx))
