"""Softmax and causal multi-head self-attention, GPT-2 style (the reference's eager path).

    q | k | v = x @ W_attn + b_attn                       one Conv1D, three contiguous slices of width C
    q, k, v  -> (B, H, T, D)                             head h is columns h*D:(h+1)*D of each slice
    scores   = q @ k^T * scale + bias                    scale = 1/sqrt(D) [/(layer_idx+1)]
    probs    = dropout(softmax(scores))
    y        = merge_heads(probs @ v) @ W_proj + b_proj, then dropout

`bias` is additive: 0 where a query may attend, -inf for the future (causality), and the dtype's most negative
finite number for a padded key (the reference adds that same number). A query whose every visible key is padded
(a left-padded row) then gets a uniform average of its visible keys: finite garbage, never NaN. Callers compare
and train on unpadded positions only.
"""

from __future__ import annotations

import math
from typing import Any

from ..backend import Backend, Generator, array_namespace, device
from ..kernels.switch import kernel_path
from ..validate import check_last_dim, check_shape
from .dropout import Dropout
from .linear import Conv1D, conv1d_forward
from .module import Module


def softmax_forward(x: Any) -> Any:
    """Softmax over the last axis. Returns out, which is also the cache its backward needs."""
    xp = array_namespace(x)
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))  # subtract the row max: exp never overflows
    e /= xp.sum(e, axis=-1, keepdims=True)  # in place: e is ours
    return e


def softmax_backward(dout: Any, out: Any) -> Any:
    """dx_i = y_i (dout_i - sum_j dout_j y_j): the Jacobian diag(y) - y y^T applied to dout, row by row."""
    xp = array_namespace(dout)
    dx = dout - xp.vecdot(dout, out, axis=-1)[..., None]  # vecdot: the row sums without a dout * y array
    dx *= out
    return dx


def attention_bias(attention_mask: Any, Tq: int, Tk: int, dtype: Any, like: Any) -> Any:
    """Additive mask (B or 1, 1, Tq, Tk): 0 = attend, -inf = future key, finfo.min = padded key.
    attention_mask (B, Tk) with 1 for real tokens and 0 for padding, or None. Queries are the last Tq of the Tk
    positions (Tk > Tq when earlier keys come from a cache)."""
    xp = array_namespace(like)
    dev = device(like)
    i = xp.reshape(xp.arange(Tk - Tq, Tk, device=dev), (Tq, 1))  # absolute query positions
    j = xp.reshape(xp.arange(Tk, device=dev), (1, Tk))
    bias = xp.where(j <= i, xp.zeros((Tq, Tk), dtype=dtype, device=dev), -math.inf)  # Tq,Tk
    bias = xp.reshape(bias, (1, 1, Tq, Tk))
    if attention_mask is not None:
        padded = xp.reshape(attention_mask == 0, (attention_mask.shape[0], 1, 1, Tk))  # B,1,1,Tk
        bias = xp.where(padded, bias + float(xp.finfo(dtype).min), bias)  # -inf stays -inf
    return bias


def attention_forward(q: Any, k: Any, v: Any, bias: Any, scale: float, p: float, gen: Generator | None,
                      upcast: bool = False) -> tuple[Any, Any, tuple]:
    """q (B,H,Tq,D), k and v (B,H,Tk,D), bias (B|1,1,Tq,Tk) -> out (B,H,Tq,D), probs (B,H,Tq,Tk), cache.
    `upcast` computes scores and softmax in float32 whatever the dtype of q (`reorder_and_upcast_attn`)."""
    xp = array_namespace(q)
    sdtype = xp.float32 if upcast else q.dtype
    qs, ks = xp.astype(q, sdtype, copy=False), xp.astype(k, sdtype, copy=False)
    scores = qs @ xp.matrix_transpose(ks)  # B,H,Tq,Tk
    if kernel_path(q) and not upcast:  # scale, mask, softmax and dropout in one launch (kernels/softmax.cu)
        from ..kernels import softmax

        probs, probs_dropped, mask = softmax.forward(scores, bias, scale, p, gen)
        return probs_dropped @ v, probs_dropped, (qs, ks, v, probs, (mask, probs_dropped), scale)
    scores *= scale  # in place: one (B,H,Tq,Tk) array instead of three
    scores += xp.astype(bias, sdtype, copy=False)
    probs = xp.astype(softmax_forward(scores), v.dtype, copy=False)  # B,H,Tq,Tk
    mask = None
    if p > 0.0:
        from .dropout import dropout_forward

        probs_dropped, mask = dropout_forward(probs, p, gen)
    else:
        probs_dropped = probs
    out = probs_dropped @ v  # B,H,Tq,D
    return out, probs_dropped, (qs, ks, v, probs, mask, scale)


def attention_backward(dout: Any, cache: tuple) -> tuple[Any, Any, Any]:
    """dout (B,H,Tq,D) -> dq (B,H,Tq,D), dk, dv (B,H,Tk,D)."""
    xp = array_namespace(dout)
    qs, ks, v, probs, mask, scale = cache
    if kernel_path(dout) and isinstance(mask, tuple):  # the kernel path's cache: (HashMask or None, dropped probs)
        from ..kernels import softmax

        return softmax.attention_backward(dout, cache)
    probs_dropped = probs if mask is None else probs * mask
    dv = xp.matrix_transpose(probs_dropped) @ dout  # B,H,Tk,D
    dprobs = dout @ xp.matrix_transpose(v)  # B,H,Tq,Tk
    if mask is not None:
        dprobs *= mask
    sdtype = qs.dtype
    dscores = softmax_backward(xp.astype(dprobs, sdtype, copy=False), xp.astype(probs, sdtype, copy=False))
    dscores *= scale  # B,H,Tq,Tk
    dq = xp.astype(dscores @ ks, v.dtype, copy=False)  # B,H,Tq,D
    dk = xp.astype(xp.matrix_transpose(dscores) @ qs, v.dtype, copy=False)  # B,H,Tk,D
    return dq, dk, dv


def split_heads(x: Any, H: int) -> Any:
    """(B, T, C) -> (B, H, T, D): head h is the contiguous column block h*D:(h+1)*D."""
    xp = array_namespace(x)
    B, T, C = x.shape
    return xp.permute_dims(xp.reshape(x, (B, T, H, C // H)), (0, 2, 1, 3))


def merge_heads(x: Any) -> Any:
    """(B, H, T, D) -> (B, T, H*D), the inverse of split_heads."""
    xp = array_namespace(x)
    B, H, T, D = x.shape
    return xp.reshape(xp.permute_dims(x, (0, 2, 1, 3)), (B, T, H * D))


class CausalSelfAttention(Module):
    """GPT-2 attention: c_attn (C -> 3C), causal softmax attention over n_head heads, c_proj (C -> C), dropouts."""

    def __init__(self, C: int, n_head: int, *, attn_pdrop: float = 0.0, resid_pdrop: float = 0.0,
                 scale_attn_weights: bool = True, scale_attn_by_inverse_layer_idx: bool = False,
                 layer_idx: int = 0, reorder_and_upcast_attn: bool = False, std: float = 0.02,
                 proj_std: float | None = None, gen: Generator | None = None,
                 backend: "str | Backend | None" = None, dtype: str = "float32"):
        super().__init__(backend, dtype)
        if n_head <= 0 or C % n_head != 0:
            raise ValueError(f"n_head: expected a positive divisor of hidden_size {C}, got {n_head}")
        gen = gen or Generator(backend=self.backend)
        self.n_head = n_head
        self.scale = 1.0
        if scale_attn_weights:
            self.scale = (C // n_head) ** -0.5
        if scale_attn_by_inverse_layer_idx:
            self.scale /= float(layer_idx + 1)
        self.upcast = reorder_and_upcast_attn
        self.c_attn = Conv1D(C, 3 * C, std, gen=gen, backend=self.backend, dtype=dtype)
        self.c_proj = Conv1D(C, C, std if proj_std is None else proj_std, gen=gen, backend=self.backend, dtype=dtype)
        self.attn_pdrop = attn_pdrop
        self.gen = gen
        self.resid_dropout = Dropout(resid_pdrop, gen)

    def forward(self, x: Any, attention_mask: Any = None, bias: Any = None, past_kv: tuple | None = None,
                use_cache: bool = False, residual: Any = None) -> tuple[Any, Any, tuple | None]:
        """x (B, T, C); attention_mask (B, T_past + T) of 1/0, or a ready additive `bias` (see attention_bias);
        past_kv (k, v) each (B, H, T_past, D) from earlier calls. Returns y (B, T, C), the attention weights
        (B, H, T, T_past + T), and the (k, v) to pass next time (None unless use_cache). With a `residual`
        (B, T, C), y is residual + the attention's output: the block's residual add, fused with the dropout
        before it (Dropout.forward); backward still returns the gradient of x alone."""
        xp = array_namespace(x)
        check_last_dim("x", x, self.c_attn.weight.shape[0], self.dtype)
        if len(x.shape) != 3:
            raise ValueError(f"x: expected shape (B, T, {x.shape[-1]}), got {tuple(x.shape)}")
        B, T, C = x.shape
        qkv = self.c_attn(x)  # B,T,3C
        q = split_heads(qkv[:, :, :C], self.n_head)  # B,H,T,D
        k = split_heads(qkv[:, :, C:2 * C], self.n_head)
        v = split_heads(qkv[:, :, 2 * C:], self.n_head)
        T_past = 0
        if past_kv is not None:
            T_past = past_kv[0].shape[2]
            k = xp.concat((past_kv[0], k), axis=2)  # B,H,Tk,D
            v = xp.concat((past_kv[1], v), axis=2)
        if bias is None:
            if attention_mask is not None:
                check_shape("attention_mask", attention_mask, (B, T_past + T))
            bias = attention_bias(attention_mask, T, T_past + T, self.dtype if not self.upcast else xp.float32, x)
        p = self.attn_pdrop if self.training else 0.0
        out, probs, cache = attention_forward(q, k, v, bias, self.scale, p, self.gen, self.upcast)
        y = self.resid_dropout(self.c_proj(merge_heads(out)), residual)  # B,T,C
        self.keep((cache, T_past))
        return y, probs, ((k, v) if use_cache else None)

    def extra_repr(self) -> str:
        return f"n_head={self.n_head}, attn_pdrop={self.attn_pdrop}"

    def key_values(self, x: Any) -> tuple[Any, Any]:
        """x (B, T, C) -> (k, v), each (B, H, T, D): what later queries attend to, as `past_kv` takes them. For
        inference (nothing is kept for backward): the last block of `forward_last` needs every token's key and
        value but only the last token's query."""
        check_last_dim("x", x, self.c_attn.weight.shape[0], self.dtype)
        C = x.shape[-1]
        W, b = self.c_attn.weight.data, self.c_attn.bias.data
        kv, _ = conv1d_forward(x, W[:, C:], b[C:])  # B,T,2C: the k | v columns of c_attn, no queries
        return split_heads(kv[:, :, :C], self.n_head), split_heads(kv[:, :, C:], self.n_head)

    def backward(self, dout: Any) -> Any:
        """dout (B, T, C) -> dx (B, T, C). Cached keys and values from past_kv are constants here."""
        xp = array_namespace(dout)
        cache, T_past = self.take_cache()
        dctx = split_heads(self.c_proj.backward(self.resid_dropout.backward(dout)), self.n_head)  # B,H,T,D
        dq, dk, dv = attention_backward(dctx, cache)
        if T_past:
            dk, dv = dk[:, :, T_past:, :], dv[:, :, T_past:, :]
        dqkv = xp.concat((merge_heads(dq), merge_heads(dk), merge_heads(dv)), axis=-1)  # B,T,3C
        return self.c_attn.backward(dqkv)
