"""Assignment 1: affine maps in both layouts, and the five activations GPT-2 configs name.

The reference solutions are minidt's own layer functions (minidt/layers/linear.py, activations.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..layers.activations import (gelu_backward, gelu_forward, gelu_new_backward, gelu_new_forward, relu_backward,
                                  relu_forward, silu_backward, silu_forward, tanh_backward, tanh_forward)
from ..layers.linear import conv1d_backward, conv1d_forward, linear_backward, linear_forward
from .checks import Case, Draw, Pair
from .spec import Assignment, Function

__all__ = ["conv1d_forward", "conv1d_backward", "linear_forward", "linear_backward", "relu_forward", "relu_backward",
           "gelu_forward", "gelu_backward", "gelu_new_forward", "gelu_new_backward", "silu_forward", "silu_backward",
           "tanh_forward", "tanh_backward", "ASSIGNMENT"]

INTRO = """
An affine map is the workhorse of the transformer: GPT-2 stores its weights as Conv1D, (in, out), and computes
x @ W + b; torch.nn.Linear (the Decision Transformer's embeddings and heads) stores (out, in) and computes
x @ W.T + b. Both take inputs with any number of leading dimensions: flatten them to one, so every product is a
single 2-D matrix multiply, and reshape back.

For out = x @ W + b and an upstream gradient dout = dL/dout (the "fake loss" L = sum(out * dout)):
    dx = dout @ W.T        dW = x^T @ dout        db = dout summed over every leading dimension

The activations act elementwise, so their backward is dout * f'(x). Each forward returns (out, cache) where the
cache is whatever its backward needs: the input x, or the output when f' is cheapest in terms of it
(relu: f' = [out > 0]; tanh: f' = 1 - out^2).
"""

PREAMBLE = """
import math
from typing import Any

from minidt.backend import array_namespace, erf  # erf: the Array API standard has none

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
"""

ACTIVATION_MATH = {
    "relu": ("relu(x) = max(x, 0)", "relu'(x) = 1 if x > 0 else 0 (0 at x = 0, as torch)", "out"),
    "gelu": ("gelu(x) = x Phi(x) = x/2 (1 + erf(x / sqrt(2)))  (the exact, erf form: transformers' \"gelu\")",
             "gelu'(x) = Phi(x) + x phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi)", "x"),
    "gelu_new": ("gelu_new(x) = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)  (the tanh form: \"gelu_new\")",
                 "gelu_new'(x) = (1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(u)", "x"),
    "silu": ("silu(x) = x s(x), s = sigmoid = 1 / (1 + exp(-x))", "silu'(x) = s (1 + x (1 - s))", "x"),
    "tanh": ("tanh(x)", "tanh'(x) = 1 - tanh(x)^2 = 1 - out^2", "out"),
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
        cache: what conv1d_backward needs (the flattened x, the weight, the shape of x).
        """),
    Function("conv1d_backward", """
        dout (..., O), cache from conv1d_forward -> (dx (..., I), dweight (I, O), dbias (O,)).

        dx = dout @ weight.T;  dweight = x^T @ dout;  dbias = sum of dout over all leading dimensions.
        """),
    Function("linear_forward", """
        torch.nn.Linear. x (..., I), weight (O, I), bias (O,) -> (out (..., O), cache).

        out = x @ weight.T + bias (note the layout: weight is (out_features, in_features)).
        """),
    Function("linear_backward", """
        dout (..., O), cache from linear_forward -> (dx (..., I), dweight (O, I), dbias (O,)).

        dx = dout @ weight;  dweight = dout^T @ x  (the layout of weight);  dbias = sum of dout over leading dims.
        """),
    *(f for name in ACTIVATION_MATH for f in _activation_functions(name)),
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


def _call_affine(f: Any, a: dict, c: dict) -> tuple[Any, Any]:
    return f(a["x"], a["weight"], a["bias"])


def _grads_affine(f: Any, dout: Any, cache: Any) -> dict[str, Any]:
    dx, dweight, dbias = f(dout, cache)
    return {"x": dx, "weight": dweight, "bias": dbias}


def _draw_activation(d: Draw) -> Case:
    shape = _leading(d) + (d.int(1, 5, "last dim"),)
    scale = d.float(0.1, 4.0, "scale")
    rng = d.rng()
    x = rng.standard_normal(shape) * scale
    x = np.where(np.abs(x) < 1e-3, 1e-3, x)  # keep clear of relu's kink, where differences are one-sided
    return Case({"x": x}, seed=int(rng.integers(2**31)))


def _call_activation(f: Any, a: dict, c: dict) -> tuple[Any, Any]:
    return f(a["x"])


def _grads_activation(f: Any, dout: Any, cache: Any) -> dict[str, Any]:
    return {"x": f(dout, cache)}


AFFINE_GROUPS = (("dx", ("x",)), ("dweight", ("weight",)), ("dbias", ("bias",)))

UNITS = (
    Pair("conv1d_forward", "conv1d_backward", _draw_affine("conv1d"), _call_affine, _grads_affine, AFFINE_GROUPS),
    Pair("linear_forward", "linear_backward", _draw_affine("linear"), _call_affine, _grads_affine, AFFINE_GROUPS),
    *(Pair(f"{name}_forward", f"{name}_backward", _draw_activation, _call_activation, _grads_activation,
           (("dx", ("x",)),)) for name in ACTIVATION_MATH),
)

ASSIGNMENT = Assignment(name="linear_activations", number=1, title="Linear layers and activations", intro=INTRO,
                        preamble=PREAMBLE, functions=FUNCTIONS, module=__name__, units=UNITS)
