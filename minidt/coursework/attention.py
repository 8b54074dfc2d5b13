"""Assignment 3: softmax and causal self-attention with a padding mask, forward and backward.

softmax_forward / softmax_backward are minidt's own (minidt/layers/attention.py). attention_forward /
attention_backward are written here: the library's pair takes a ready additive bias plus dropout and float32
upcasting; the assignment asks for the masking itself and leaves the rest out. tests/test_coursework.py checks
them against the library's pair with `attention_bias`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import array_namespace, device
from ..layers.attention import softmax_backward, softmax_forward
from .checks import Case, Draw, Question, left_padding_mask
from .pair import Causal, Pair
from .spec import Assignment, Function

__all__ = ["softmax_forward", "softmax_backward", "attention_forward", "attention_backward", "softmax_jacobian",
           "ASSIGNMENT"]


def attention_forward(q: Any, k: Any, v: Any, attention_mask: Any, scale: float) -> tuple[Any, tuple]:
    """q, k, v (B, H, T, D), attention_mask (B, T) of 1 (real) / 0 (padding) -> out (B, H, T, D), cache."""
    xp = array_namespace(q)
    T = q.shape[2]
    i = xp.reshape(xp.arange(T, device=device(q)), (T, 1))  # query positions
    j = xp.reshape(xp.arange(T, device=device(q)), (1, T))  # key positions
    bias = xp.where(j <= i, xp.zeros((T, T), dtype=q.dtype, device=device(q)), -math.inf)  # T,T causal
    padded = xp.reshape(attention_mask == 0, (attention_mask.shape[0], 1, 1, T))  # B,1,1,T
    # finfo.min, not -inf, for padding: a query that sees only padded keys (a left-padded row) then averages
    # them, finite garbage that nobody reads, instead of NaN that would poison the backward pass
    bias = xp.where(padded, bias + float(xp.finfo(q.dtype).min), bias)  # B,1,T,T
    scores = q @ xp.matrix_transpose(k) * scale + bias  # B,H,T,T
    probs = softmax_forward(scores)  # B,H,T,T
    out = probs @ v  # B,H,T,D
    return out, (q, k, v, probs, scale)


def attention_backward(dout: Any, cache: tuple) -> tuple[Any, Any, Any]:
    """dout (B, H, T, D) -> dq, dk, dv (B, H, T, D)."""
    xp = array_namespace(dout)
    q, k, v, probs, scale = cache
    dv = xp.matrix_transpose(probs) @ dout  # B,H,T,D
    dprobs = dout @ xp.matrix_transpose(v)  # B,H,T,T
    # masked scores have probs exactly 0, so softmax_backward gives them no gradient: the mask is in probs
    dscores = softmax_backward(dprobs, probs) * scale  # B,H,T,T
    dq = dscores @ k  # B,H,T,D
    dk = xp.matrix_transpose(dscores) @ q  # B,H,T,D
    return dq, dk, dv


def softmax_jacobian(x: Any) -> Any:
    """x (..., N) -> J (..., N, N), J[..., j, i] = d y_j / d x_i with y = softmax(x) over the last axis."""
    xp = array_namespace(x)
    y = softmax_forward(x)
    eye = xp.eye(x.shape[-1], dtype=x.dtype, device=device(x))
    return y[..., :, None] * eye - y[..., :, None] * y[..., None, :]  # diag(y) - y y^T


INTRO = """
Softmax over the last axis, y_i = exp(x_i) / sum_j exp(x_j). Subtract the row maximum first (softmax does not
change, and exp never overflows).

Causal self-attention for one head (q, k, v of shape (T, D), all heads at once as (B, H, T, D)):

    scores = q @ k^T * scale + bias          (T, T): query i, key j
    probs  = softmax(scores)                 over the keys
    out    = probs @ v

The additive bias carries the masks: 0 where query i may attend key j, -inf for the future (j > i: causality),
and the dtype's most negative finite number (xp.finfo(dtype).min), *added*, for a padded key (attention_mask 0;
the Decision Transformer's batches are left-padded). A query whose visible keys are all padding then averages
them: finite garbage nobody reads (the grader compares real query rows only, and requires no NaN anywhere).

The backward passes are yours to derive (tutorials/05_attention.py does it). Some prompts:
- softmax: write d y_j / d x_i for i = j and for i != j, then dx_i = sum_j dout_j d y_j / d x_i: it collapses to
  a short expression in y and dout with one row sum.
- attention: run the three lines backwards. out = probs @ v is two matrix products' worth of gradient (as in
  Conv1D: which operand is transposed?); probs = softmax(scores) is your softmax_backward; scores = q @ k^T *
  scale + bias gives dq and dk, and the constant bias gets none.
The masked entries of probs are exactly 0, so they pass no gradient: keep the masked probs in the cache. (A
backward that recomputes softmax(q @ k^T * scale) without the bias lets gradient leak into the future and into
padding; the grader will notice.)
"""

PREAMBLE = """
import math
from typing import Any

from minidt.backend import array_namespace, device  # device(x): pass it as device= when creating arrays
"""

FUNCTIONS = (
    Function("softmax_forward", """
        x (..., N) -> out (..., N): softmax over the last axis. out is also the cache its backward needs.

        Subtract the row maximum before exp (keepdims=True keeps the shapes broadcastable).
        """),
    Function("softmax_backward", """
        dout (..., N), out (..., N) from softmax_forward -> dx (..., N).

        Derive it from the softmax's Jacobian (the module docstring's prompt); one row sum over the last axis, no
        (N, N) matrix.
        """),
    Function("attention_forward", """
        q, k, v (B, H, T, D), attention_mask (B, T) of 1 (real) and 0 (padding), scale (float) ->
        (out (B, H, T, D), cache).

        scores = q @ k^T * scale + bias; bias (B, 1, T, T): 0 where key j <= query i, -inf where j > i, plus
        xp.finfo(q.dtype).min where attention_mask[b, j] == 0. out = softmax(scores) @ v.
        Build the positions with xp.arange(T, device=device(q)); use softmax_forward above.
        cache = (q, k, v, probs, scale), probs = softmax(scores) (B, H, T, T).
        """),
    Function("attention_backward", """
        dout (B, H, T, D), cache from attention_forward -> (dq, dk, dv), each (B, H, T, D).

        In reverse order: dv and dprobs from out = probs @ v; dscores from dprobs with softmax_backward above;
        dq and dk from scores = q @ k^T * scale (mind the scale). xp.matrix_transpose transposes the last two axes.
        """),
    Function("softmax_jacobian", """
        Question (graded: your answer as a function). x (..., N) -> J (..., N, N).

        With y = softmax(x) over the last axis, J[..., j, i] = d y_j / d x_i (the first prompt above: the cases
        i = j and i != j). Your softmax_backward applies this matrix without building it; here, build it.
        """),
)


def _draw_softmax(d: Draw) -> Case:
    lead = tuple(d.int(1, 3, f"leading dim {i}") for i in range(d.int(1, 2, "number of leading dims")))
    N = d.int(1, 6, "N")
    scale, shift = d.float(0.1, 5.0, "scale"), d.choice((800.0, -800.0, 0.0), "shift")  # exp over- and underflows
    rng = d.rng()
    return Case({"x": rng.standard_normal((*lead, N)) * scale + shift}, seed=int(rng.integers(2**31)))


def _draw_jacobian(d: Draw) -> Case:
    lead = tuple(d.int(1, 3, f"leading dim {i}") for i in range(d.int(0, 2, "number of leading dims")))
    x = d.rng().standard_normal((*lead, d.int(1, 6, "N"))) * d.float(0.1, 5.0, "scale")
    return Case({"x": x})


def _args_softmax(a: dict, c: dict) -> tuple:
    return (a["x"],)


def _grads_softmax(returned: Any) -> dict[str, Any]:
    return {"x": returned}


def _draw_attention(d: Draw) -> Case:
    B, H, T, D = d.int(1, 2, "B"), d.int(1, 3, "H"), d.int(3, 5, "T"), d.int(1, 4, "D")
    mask = left_padding_mask(d, B, T, min_real=2)  # padding in row 0, and a query that sees two real keys
    scale = d.choice((D ** -0.5, 0.3, 2.0) if D > 1 else (0.3, 2.0), "scale")  # never 1: a forgotten scale shows
    rng = d.rng()
    return Case({name: rng.standard_normal((B, H, T, D)) for name in ("q", "k", "v")},
                {"attention_mask": mask, "scale": scale}, seed=int(rng.integers(2**31)))


def _args_attention(a: dict, c: dict) -> tuple:
    return a["q"], a["k"], a["v"], c["attention_mask"], c["scale"]


def _grads_attention(returned: Any) -> dict[str, Any]:
    dq, dk, dv = returned
    return {"q": dq, "k": dk, "v": dv}


def _real_queries(case: Case) -> np.ndarray:
    """(B, 1, T, 1): the query rows that count; a padded query's output is garbage by design."""
    mask = case.consts["attention_mask"]
    return (mask > 0)[:, None, :, None]


UNITS = (
    Pair("softmax_forward", "softmax_backward", _draw_softmax, _args_softmax, _grads_softmax, (("dx", ("x",)),),
         returns_cache=False),
    Pair("attention_forward", "attention_backward", _draw_attention, _args_attention, _grads_attention,
         (("dq", ("q",)), ("dk", ("k",)), ("dv", ("v",))), where=_real_queries,
         probe=Causal(inputs=("k", "v"), axis=2, out_axis=2, what="key")),
    Question("softmax_jacobian", _draw_jacobian, _args_softmax, "d softmax / dx"),
)

ASSIGNMENT = Assignment(name="attention", number=3, title="Softmax and causal self-attention", intro=INTRO,
                        preamble=PREAMBLE, functions=FUNCTIONS, module=__name__, units=UNITS)
