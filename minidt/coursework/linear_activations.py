"""Assignment 1: affine maps in both layouts, the five activations GPT-2 configs name, and dropout.

The reference solutions are minidt's own layer functions (minidt/layers/linear.py, activations.py, dropout.py's
backward). dropout_forward is written here: the library's draws its mask from a Generator; the assignment's takes
the uniform draws as an argument, so the grader knows which entries are kept. tests/test_coursework.py checks it
against minidt.layers.dropout.dropout_forward.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import array_namespace
from ..layers.activations import (gelu_backward, gelu_forward, gelu_new_backward, gelu_new_forward, relu_backward,
                                  relu_forward, silu_backward, silu_forward, tanh_backward, tanh_forward)
from ..layers.dropout import dropout_backward
from ..layers.linear import conv1d_backward, conv1d_forward, linear_backward, linear_forward
from .checks import Case, Draw, Question
from .pair import Pair
from .spec import Assignment, Function

__all__ = ["conv1d_forward", "conv1d_backward", "linear_forward", "linear_backward", "relu_forward", "relu_backward",
           "gelu_forward", "gelu_backward", "gelu_new_forward", "gelu_new_backward", "silu_forward", "silu_backward",
           "tanh_forward", "tanh_backward", "dropout_forward", "dropout_backward", "dropout_variance", "ASSIGNMENT"]


def dropout_forward(x: Any, p: float, u: Any) -> tuple[Any, Any]:
    """x (...), p in [0, 1), u (...) uniform in [0, 1) -> out (...), mask (...) holding 0 or 1/(1-p)."""
    xp = array_namespace(x)
    mask = xp.astype(u >= p, x.dtype)  # keep where u >= p: probability 1 - p
    mask *= 1.0 / (1.0 - p)  # in place: the cast is already a new array
    return x * mask, mask


def dropout_variance(x: Any, p: float) -> Any:
    """Var[out] of inverted dropout at a fixed x: out_i is x_i / (1 - p) with probability 1 - p, else 0."""
    return x * x * (p / (1.0 - p))


INTRO = """
An affine map is the workhorse of the transformer: GPT-2 stores its weights as Conv1D, (in, out), and computes
x @ W + b; torch.nn.Linear (the Decision Transformer's embeddings and heads) stores (out, in) and computes
x @ W.T + b. Both take inputs with any number of leading dimensions: flatten them to one, so every product is a
single 2-D matrix multiply, and reshape back.

The backward passes are yours to derive (tutorials/02_linear_and_embedding.py and 03_activations.py do it). With
the upstream gradient dout = dL/dout (the "fake loss" L = sum(out * dout)):
- write one entry, out[n, o] = sum_i x[n, i] W[i, o] + b[o], and ask which entries of out each of x[n, i],
  W[i, o] and b[o] touches: each gradient is one matrix product or one sum, and its shape is its input's shape;
- an activation acts elementwise, so its backward is dout times its derivative at x. The cache is whatever the
  backward needs: the input x, or the output when the derivative is cheapest in terms of it.

Dropout (inverted, as torch.nn.Dropout in training mode) zeroes each entry with probability p and scales the
survivors by 1/(1 - p), so the expected output is the input and evaluation needs no rescaling. The grader hands
dropout_forward the uniform draws u, so it knows which entries you keep (u >= p).
"""

PREAMBLE = """
import math
from typing import Any

from minidt.backend import array_namespace, erf  # erf: the Array API standard has none

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
"""

ACTIVATION_MATH = {  # name: (the function, a prompt for its derivative, what the cache holds)
    "relu": ("relu(x) = max(x, 0)", "relu'(x): 1 or 0, depending on what? (0 at x = 0, as torch)", "out"),
    "gelu": ("gelu(x) = x Phi(x) = x/2 (1 + erf(x / sqrt(2)))  (the exact, erf form: transformers' \"gelu\")",
             "gelu'(x): the product rule; Phi' = phi, the standard normal density exp(-x^2/2) / sqrt(2 pi)", "x"),
    "gelu_new": ("gelu_new(x) = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)  (the tanh form: \"gelu_new\")",
                 "gelu_new'(x): the product rule, then the chain rule through tanh (tanh' = 1 - tanh^2) and u(x)",
                 "x"),
    "silu": ("silu(x) = x s(x), s = sigmoid = 1 / (1 + exp(-x))",
             "silu'(x): the product rule; the sigmoid's derivative is s (1 - s)", "x"),
    "tanh": ("tanh(x)", "tanh'(x) = 1 - tanh(x)^2: write it in terms of what the cache holds", "out"),
}


def _activation_functions(name: str) -> tuple[Function, Function]:
    f, df, cache = ACTIVATION_MATH[name]
    return (Function(f"{name}_forward", f"""
        x (...) -> (out (...), cache).

        {f}
        The cache is {"the output out" if cache == "out" else "the input x"}: what the backward needs.
        """),
            Function(f"{name}_backward", f"""
        dout (...), cache from {name}_forward -> dx (...) = dout * f'(x).

        {df}
        """))


FUNCTIONS = (
    Function("conv1d_forward", """
        GPT-2's Conv1D. x (..., I), weight (I, O), bias (O,) -> (out (..., O), cache).

        out = x @ weight + bias, computed on x reshaped to (N, I) with N the product of the leading dimensions.
        cache = (x2, weight, x.shape): x reshaped to (N, I), the weight, and x's shape (a tuple).
        """),
    Function("conv1d_backward", """
        dout (..., O), cache from conv1d_forward -> (dx (..., I), dweight (I, O), dbias (O,)).

        Work on dout reshaped to (N, O). dx: one matrix product of dout with the weight; dweight: one matrix product
        of x and dout (which transposed, to get (I, O)?); dbias: which sum of dout? dx goes back to x's shape.
        """),
    Function("linear_forward", """
        torch.nn.Linear. x (..., I), weight (O, I), bias (O,) -> (out (..., O), cache).

        out = x @ weight.T + bias (note the layout: weight is (out_features, in_features)).
        cache = (x2, weight, x.shape), as conv1d_forward's.
        """),
    Function("linear_backward", """
        dout (..., O), cache from linear_forward -> (dx (..., I), dweight (O, I), dbias (O,)).

        As conv1d_backward, for the other layout: dweight has weight's shape (out_features, in_features).
        """),
    *(f for name in ACTIVATION_MATH for f in _activation_functions(name)),
    Function("dropout_forward", """
        x (...), p (float in [0, 1)), u (...) uniform draws in [0, 1) of x's shape -> (out (...), mask (...)).

        Keep x_i where u_i >= p (probability 1 - p), zero it elsewhere, and scale what is kept by 1/(1 - p).
        mask (x's shape and dtype): 1/(1 - p) where kept, 0 elsewhere; out = x * mask; mask is the cache.
        """),
    Function("dropout_backward", """
        dout (...), mask from dropout_forward -> dx (...).

        out is linear in x, entry by entry: what does each entry of dx get?
        """),
    Function("dropout_variance", """
        Question (graded: your answer as a function). x (...), p (float in [0, 1)) -> Var[out] (x's shape).

        For a fixed x, out = dropout_forward(x, p, u) with u uniform: each out_i is x_i / (1 - p) with probability
        1 - p and 0 otherwise, so E[out_i] = x_i (what the 1/(1 - p) is for). What is the variance of out_i?
        """),
)


# --- the checks ------------------------------------------------------------------------------------------------


def _leading(d: Draw) -> tuple[int, ...]:
    return tuple(d.int(1, 3, f"leading dim {i}") for i in range(d.int(1, 2, "number of leading dims")))


def _draw_affine(layout: str) -> Any:
    def draw(d: Draw) -> Case:
        lead, I, O = _leading(d), d.int(1, 5, "in_features"), d.int(1, 5, "out_features")
        rng = d.rng()
        shape = (I, O) if layout == "conv1d" else (O, I)
        return Case({"x": rng.standard_normal((*lead, I)), "weight": rng.standard_normal(shape),
                     "bias": rng.standard_normal(O)}, seed=int(rng.integers(2**31)))

    return draw


def _args_affine(a: dict, c: dict) -> tuple:
    return a["x"], a["weight"], a["bias"]


def _grads_affine(returned: Any) -> dict[str, Any]:
    dx, dweight, dbias = returned
    return {"x": dx, "weight": dweight, "bias": dbias}


def _draw_activation(d: Draw) -> Case:
    shape = _leading(d) + (d.int(1, 5, "last dim"),)
    scale = d.float(0.1, 4.0, "scale")
    rng = d.rng()
    x = rng.standard_normal(shape) * scale
    x = np.where(np.abs(x) < 1e-3, 1e-3, x)  # keep clear of relu's kink, where differences are one-sided
    return Case({"x": x}, seed=int(rng.integers(2**31)))


def _args_activation(a: dict, c: dict) -> tuple:
    return (a["x"],)


def _grads_x(returned: Any) -> dict[str, Any]:
    return {"x": returned}


def _draw_dropout(d: Draw) -> Case:
    shape = _leading(d) + (d.int(1, 5, "last dim"),)
    p = d.choice((0.1, 0.5, 0.9, 0.0), "p")
    rng = d.rng()
    return Case({"x": rng.standard_normal(shape)}, {"p": p, "u": rng.random(shape)}, seed=int(rng.integers(2**31)))


def _args_dropout(a: dict, c: dict) -> tuple:
    return a["x"], c["p"], c["u"]


def _draw_variance(d: Draw) -> Case:
    shape = _leading(d) + (d.int(1, 5, "last dim"),)
    p = d.choice((0.1, 0.5, 0.9), "p")
    return Case({"x": d.rng().standard_normal(shape)}, {"p": p})


AFFINE_GROUPS = (("dx", ("x",)), ("dweight", ("weight",)), ("dbias", ("bias",)))

UNITS = (
    Pair("conv1d_forward", "conv1d_backward", _draw_affine("conv1d"), _args_affine, _grads_affine, AFFINE_GROUPS),
    Pair("linear_forward", "linear_backward", _draw_affine("linear"), _args_affine, _grads_affine, AFFINE_GROUPS),
    *(Pair(f"{name}_forward", f"{name}_backward", _draw_activation, _args_activation, _grads_x, (("dx", ("x",)),))
      for name in ACTIVATION_MATH),
    Pair("dropout_forward", "dropout_backward", _draw_dropout, _args_dropout, _grads_x, (("dx", ("x",)),)),
    Question("dropout_variance", _draw_variance, lambda a, c: (a["x"], c["p"]), "Var[out]"),
)

ASSIGNMENT = Assignment(name="linear_activations", number=1, title="Linear layers, activations and dropout",
                        intro=INTRO, preamble=PREAMBLE, functions=FUNCTIONS, module=__name__, units=UNITS)
