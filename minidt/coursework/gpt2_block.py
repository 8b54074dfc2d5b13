"""Assignment 4: the pre-LN GPT-2 block as a pure function pair, composed from the earlier assignments' pieces.

The library's Block is a Module; the pure pair is written here and tests/test_coursework.py checks it against
minidt.layers.Block (and so, through the parity suite, against transformers' GPT2Block).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import array_namespace
from ..layers.activations import ACTIVATIONS
from ..layers.attention import merge_heads, split_heads
from ..layers.layernorm import layernorm_backward, layernorm_forward
from ..layers.linear import conv1d_backward, conv1d_forward
from .attention import attention_backward, attention_forward
from .checks import Case, Draw, Question, left_padding_mask
from .pair import Causal, Pair
from .spec import Assignment, Function

__all__ = ["block_forward", "block_backward", "block_parameter_count", "PARAM_NAMES", "ASSIGNMENT"]

PARAM_NAMES = ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
               "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
               "mlp.c_proj.weight", "mlp.c_proj.bias")


def block_forward(x: Any, params: dict[str, Any], n_head: int, attention_mask: Any, activation: str,
                  eps: float) -> tuple[Any, tuple]:
    """x (B, T, C), params {name: array}, attention_mask (B, T) -> out (B, T, C), cache."""
    C = x.shape[-1]
    act_forward, _ = ACTIVATIONS[activation]
    # attention sub-block: x1 = x + c_proj(attention(c_attn(ln_1(x))))
    h, ln_1 = layernorm_forward(x, params["ln_1.weight"], params["ln_1.bias"], eps)  # B,T,C
    qkv, c_attn = conv1d_forward(h, params["attn.c_attn.weight"], params["attn.c_attn.bias"])  # B,T,3C
    q = split_heads(qkv[:, :, :C], n_head)  # B,H,T,D  q | k | v are contiguous slices of width C
    k = split_heads(qkv[:, :, C:2 * C], n_head)
    v = split_heads(qkv[:, :, 2 * C:], n_head)
    y, attn = attention_forward(q, k, v, attention_mask, (C // n_head) ** -0.5)  # B,H,T,D
    a, attn_proj = conv1d_forward(merge_heads(y), params["attn.c_proj.weight"], params["attn.c_proj.bias"])
    x1 = x + a  # B,T,C
    # MLP sub-block: out = x1 + c_proj(act(c_fc(ln_2(x1))))
    h2, ln_2 = layernorm_forward(x1, params["ln_2.weight"], params["ln_2.bias"], eps)
    f, c_fc = conv1d_forward(h2, params["mlp.c_fc.weight"], params["mlp.c_fc.bias"])  # B,T,n_inner
    g, act = act_forward(f)
    m, mlp_proj = conv1d_forward(g, params["mlp.c_proj.weight"], params["mlp.c_proj.bias"])  # B,T,C
    out = x1 + m
    return out, (n_head, activation, ln_1, c_attn, attn, attn_proj, ln_2, c_fc, act, mlp_proj)


def block_backward(dout: Any, cache: tuple) -> tuple[Any, dict[str, Any]]:
    """dout (B, T, C) -> dx (B, T, C), {name: gradient} for every parameter."""
    xp = array_namespace(dout)
    n_head, activation, ln_1, c_attn, attn, attn_proj, ln_2, c_fc, act, mlp_proj = cache
    _, act_backward = ACTIVATIONS[activation]
    grads: dict[str, Any] = {}
    # out = x1 + mlp(x1): the gradient reaches x1 straight down the residual path and through the branch
    dg, grads["mlp.c_proj.weight"], grads["mlp.c_proj.bias"] = conv1d_backward(dout, mlp_proj)
    df = act_backward(dg, act)
    dh2, grads["mlp.c_fc.weight"], grads["mlp.c_fc.bias"] = conv1d_backward(df, c_fc)
    dx1_branch, grads["ln_2.weight"], grads["ln_2.bias"] = layernorm_backward(dh2, ln_2)
    dx1 = dout + dx1_branch
    # x1 = x + attn(x): the same again
    dy, grads["attn.c_proj.weight"], grads["attn.c_proj.bias"] = conv1d_backward(dx1, attn_proj)
    dq, dk, dv = attention_backward(split_heads(dy, n_head), attn)
    dqkv = xp.concat((merge_heads(dq), merge_heads(dk), merge_heads(dv)), axis=-1)  # B,T,3C
    dh, grads["attn.c_attn.weight"], grads["attn.c_attn.bias"] = conv1d_backward(dqkv, c_attn)
    dx_branch, grads["ln_1.weight"], grads["ln_1.bias"] = layernorm_backward(dh, ln_1)
    dx = dx1 + dx_branch
    return dx, grads


def block_parameter_count(C: int, n_inner: int) -> int:
    """The number of entries of the block's parameters, from their shapes."""
    ln = 2 * C  # weight and bias, twice
    attn = C * 3 * C + 3 * C + C * C + C  # c_attn, c_proj
    mlp = C * n_inner + n_inner + n_inner * C + C  # c_fc, c_proj
    return 2 * ln + attn + mlp


INTRO = """
GPT-2's block is pre-LN: each sub-layer normalizes its input, and its output is *added* to the residual stream.

    x1  = x  + c_proj(attention(split(c_attn(ln_1(x)))))      attention: assignment 3, scale 1/sqrt(D)
    out = x1 + mlp.c_proj(act(mlp.c_fc(ln_2(x1))))             act: assignment 1, by its transformers name

c_attn maps C -> 3C, split into q | k | v (contiguous slices of width C), each split into n_head heads of
D = C / n_head columns (head h is columns h*D:(h+1)*D). All affine maps are Conv1D: weight (in, out).

The backward runs the two residual steps in reverse (tutorials/06_gpt2_block_and_dt_tokens.py). The prompt:
out = x1 + f(x1) uses x1 twice, once on the residual path and once through the branch f. How many terms does
dL/dx1 have, and what is each? The same question again at x1 = x + g(x).

The parameters are a dict with transformers' names (the block's state_dict keys without the `h.0.` prefix);
the backward returns their gradients in a dict with the same keys.

The pieces from assignments 1-3 are imported at the top of this file (the reference solutions). Use them.
"""

PREAMBLE = """
from typing import Any

from minidt.backend import array_namespace
from minidt.coursework.attention import attention_backward, attention_forward  # assignment 3
from minidt.layers.activations import ACTIVATIONS  # name -> (forward, backward) of assignment 1
from minidt.layers.attention import merge_heads, split_heads  # (B, T, C) <-> (B, H, T, D)
from minidt.layers.layernorm import layernorm_backward, layernorm_forward  # assignment 2
from minidt.layers.linear import conv1d_backward, conv1d_forward  # assignment 1
"""

FUNCTIONS = (
    Function("block_forward", """
        x (B, T, C), params {name: array}, n_head (int, divides C), attention_mask (B, T) of 1/0, activation
        (a name in ACTIVATIONS), eps (LayerNorm's) -> (out (B, T, C), cache).

        params: ln_1.weight, ln_1.bias (C,); attn.c_attn.weight (C, 3C), attn.c_attn.bias (3C,);
        attn.c_proj.weight (C, C), attn.c_proj.bias (C,); ln_2.weight, ln_2.bias (C,);
        mlp.c_fc.weight (C, n_inner), mlp.c_fc.bias (n_inner,); mlp.c_proj.weight (n_inner, C), mlp.c_proj.bias (C,).
        x1 = x + c_proj(merge_heads(attention_forward(q, k, v, attention_mask, (C // n_head) ** -0.5)))
        with q | k | v = conv1d(ln_1(x)) split in three and into heads; out = x1 + mlp(ln_2(x1)).
        cache = (n_head, activation, ln_1, c_attn, attn, attn_proj, ln_2, c_fc, act, mlp_proj): the two arguments,
        then the cache of each forward in the order they run (layernorm_forward for ln_1, conv1d_forward for
        c_attn, attention_forward, conv1d_forward for attn.c_proj, layernorm_forward for ln_2, conv1d_forward for
        mlp.c_fc, the activation's forward, conv1d_forward for mlp.c_proj).
        """),
    Function("block_backward", """
        dout (B, T, C), cache from block_forward -> (dx (B, T, C), grads {name: gradient, for every key of params}).

        Reverse order: the MLP branch, then the residual `+` at x1; the attention branch (dq, dk, dv merged and
        concatenated back to (B, T, 3C) for c_attn's backward), then the residual `+` at x.
        """),
    Function("block_parameter_count", """
        Question (graded: your answer as a function). C (int), n_inner (int) -> an int.

        How many numbers does one block learn: the total size of its twelve parameters (block_forward's docstring
        gives their shapes)? With n_inner = 4C, which term dominates as C grows, and what does that say about a
        GPT-2 block's size (C = 768)?
        """),
)


def _draw(d: Draw) -> Case:
    B, T = d.int(1, 2, "B"), d.int(1, 4, "T")
    n_head, D = d.int(1, 2, "n_head"), d.int(1, 3, "head size D")
    C = n_head * D
    n_inner = d.choice((4 * C, 3), "n_inner")
    activation = d.choice(tuple(ACTIVATIONS), "activation")
    mask = left_padding_mask(d, B, T)
    rng = d.rng()

    def w(i: int, o: int) -> np.ndarray:
        return rng.standard_normal((i, o)) / np.sqrt(i)

    arrays = {"x": rng.standard_normal((B, T, C)),
              "ln_1.weight": 1.0 + 0.3 * rng.standard_normal(C), "ln_1.bias": 0.3 * rng.standard_normal(C),
              "attn.c_attn.weight": w(C, 3 * C), "attn.c_attn.bias": 0.3 * rng.standard_normal(3 * C),
              "attn.c_proj.weight": w(C, C), "attn.c_proj.bias": 0.3 * rng.standard_normal(C),
              "ln_2.weight": 1.0 + 0.3 * rng.standard_normal(C), "ln_2.bias": 0.3 * rng.standard_normal(C),
              "mlp.c_fc.weight": w(C, n_inner), "mlp.c_fc.bias": 0.3 * rng.standard_normal(n_inner),
              "mlp.c_proj.weight": w(n_inner, C), "mlp.c_proj.bias": 0.3 * rng.standard_normal(C)}
    return Case(arrays, {"n_head": n_head, "attention_mask": mask, "activation": activation, "eps": 1e-5},
                seed=int(rng.integers(2**31)))


def _args(a: dict, c: dict) -> tuple:
    return a["x"], {k: a[k] for k in PARAM_NAMES}, c["n_head"], c["attention_mask"], c["activation"], c["eps"]


def _grads(returned: Any) -> dict[str, Any]:
    dx, grads = returned
    return {"x": dx, **(grads if isinstance(grads, dict) else {})}


def _real_rows(case: Case) -> np.ndarray:
    return (case.consts["attention_mask"] > 0)[:, :, None]  # B,T,1


GROUPS = (("dx", ("x",)), ("dln_1", PARAM_NAMES[:2]), ("dattn", PARAM_NAMES[2:6]), ("dln_2", PARAM_NAMES[6:8]),
          ("dmlp", PARAM_NAMES[8:]))

def _draw_count(d: Draw) -> Case:
    C = d.int(1, 1024, "C")
    return Case({}, {"C": C, "n_inner": d.choice((4 * C, d.int(1, 4096, "other n_inner")), "n_inner")})


UNITS = (Pair("block_forward", "block_backward", _draw, _args, _grads, GROUPS, where=_real_rows,
              probe=Causal(inputs=("x",), axis=1, out_axis=1, what="position")),
         Question("block_parameter_count", _draw_count, lambda a, c: (c["C"], c["n_inner"]), "parameters"))

ASSIGNMENT = Assignment(name="gpt2_block", number=4, title="The GPT-2 block", intro=INTRO, preamble=PREAMBLE,
                        functions=FUNCTIONS, module=__name__, units=UNITS)
