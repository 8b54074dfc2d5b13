"""Assignment 2: LayerNorm, forward and the backward pass derived by hand.

The reference solution is minidt's own pair (minidt/layers/layernorm.py).
"""

from __future__ import annotations

from typing import Any

from ..backend import array_namespace
from ..layers.layernorm import layernorm_backward, layernorm_forward
from .checks import Case, Draw, Question
from .pair import Pair
from .spec import Assignment, Function

__all__ = ["layernorm_forward", "layernorm_backward", "rstd_gradient", "ASSIGNMENT"]


def rstd_gradient(x: Any, eps: float) -> Any:
    """x (..., C) -> d rstd / d x_i (..., C), rstd = 1 / sqrt(var + eps) of each row."""
    xp = array_namespace(x)
    C = x.shape[-1]
    mean = xp.mean(x, axis=-1, keepdims=True)
    rstd = 1.0 / xp.sqrt(xp.mean((x - mean) ** 2, axis=-1, keepdims=True) + eps)
    return -(rstd ** 3) * (x - mean) / C  # -1/2 (var + eps)^(-3/2) * d var / d x_i, d var / d x_i = 2 (x_i - mean) / C

INTRO = """
LayerNorm normalizes each row (the last axis, C entries) to zero mean and unit variance, then scales and shifts:

    mean = sum_i x_i / C        var = sum_i (x_i - mean)^2 / C   (biased: divide by C, as torch)
    rstd = 1 / sqrt(var + eps)  xhat = (x - mean) * rstd         out = xhat * weight + bias

The backward pass is yours to derive (tutorials/04_layernorm.py does it step by step). Some prompts:
- out = xhat * weight + bias, row by row: what do dweight and dbias collect from each row, and from all of them?
- Call g = dout * weight the gradient with respect to xhat. x reaches xhat three times: directly, through mean
  and through var (so through rstd). Write d xhat_j / d x_i with the three terms (d mean / d x_i = 1/C; what is
  d rstd / d x_i?), then sum over j: the row means of g and of g * xhat appear, and everything is a multiple of
  rstd.
- Forgetting one of the paths is the classic bug; the finite-difference check catches it at once.
Keep rstd (not std) in the cache: the backward needs 1/sigma twice, and xhat is cheap to recompute.
"""

PREAMBLE = """
from typing import Any

from minidt.backend import array_namespace
"""

FUNCTIONS = (
    Function("layernorm_forward", """
        x (..., C), weight (C,), bias (C,), eps (float) -> (out (..., C), cache).

        out = (x - mean) / sqrt(var + eps) * weight + bias, mean and biased var over the last axis.
        cache = (x, weight, mean, rstd), mean and rstd of shape (..., 1) (keepdims=True).
        """),
    Function("layernorm_backward", """
        dout (..., C), cache from layernorm_forward -> (dx (..., C), dweight (C,), dbias (C,)).

        dweight, dbias: sums over every leading dimension (reshape to (N, C) and sum over axis 0) of what each row
        contributes. dx (..., C): derive it (the module docstring's prompts); it is rstd times g minus two row means
        of g-based terms, with g = dout * weight.
        """),
    Function("rstd_gradient", """
        Question (graded: your answer as a function). x (..., C), eps -> (..., C).

        rstd = 1 / sqrt(var + eps) is one number per row. Entry i of a row: d rstd / d x_i, the derivative of
        that row's rstd with respect to x_i (the second prompt above). Derive it, then write it in terms of rstd,
        x_i - mean and C.
        """),
)


def _draw(d: Draw) -> Case:
    lead = tuple(d.int(1, 3, f"leading dim {i}") for i in range(d.int(1, 2, "number of leading dims")))
    C = d.int(2, 8, "C")
    eps = d.choice((1e-5, 1e-3, 0.1), "eps")
    scale, shift = d.float(0.1, 10.0, "input scale"), d.float(-3.0, 3.0, "input shift")
    rng = d.rng()
    return Case({"x": rng.standard_normal((*lead, C)) * scale + shift, "weight": 1.0 + rng.standard_normal(C),
                 "bias": rng.standard_normal(C)}, {"eps": eps}, seed=int(rng.integers(2**31)))


def _args(a: dict, c: dict) -> tuple:
    return a["x"], a["weight"], a["bias"], c["eps"]


def _grads(returned: Any) -> dict[str, Any]:
    dx, dweight, dbias = returned
    return {"x": dx, "weight": dweight, "bias": dbias}


UNITS = (Pair("layernorm_forward", "layernorm_backward", _draw, _args, _grads,
              (("dx", ("x",)), ("dweight", ("weight",)), ("dbias", ("bias",)))),
         Question("rstd_gradient", _draw, lambda a, c: (a["x"], c["eps"]), "d rstd / dx"))

ASSIGNMENT = Assignment(name="layernorm", number=2, title="LayerNorm", intro=INTRO, preamble=PREAMBLE,
                        functions=FUNCTIONS, module=__name__, units=UNITS)
