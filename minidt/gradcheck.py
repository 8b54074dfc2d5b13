"""Gradient checking: central finite differences in float64, and one relative error per comparison.

What every backward pass in minidt is tested with (tests/, tutorials/, the coursework grader). Host NumPy only:
a checking tool, not model code; convert device arrays with `minidt.to_numpy` first.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np


def numerical_grad(f: Callable[[], float], x: np.ndarray, h: float = 1e-6,
                   entries: Iterable[tuple[int, ...]] | None = None) -> np.ndarray:
    """d f() / d x by central differences, (f(x + h) - f(x - h)) / 2h, one entry at a time: x (any shape, float64)
    is perturbed in place and restored. entries: a list of index tuples to check (a spot check for big arrays;
    the other entries stay 0), default every entry. The error is O(h^2) from truncation plus O(eps / h) from
    round-off: h = 1e-6 in float64 balances them."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape) if entries is None else entries:
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def rel_error(a: np.ndarray, b: np.ndarray, floor: float = 1e-12) -> float:
    """max |a - b| / max(max |b|, floor): one number per comparison, relative to the reference b's scale (an
    element-wise relative error explodes on entries that are legitimately near zero).

    floor: the smallest scale the error is measured against. A reference that is exactly zero (a saturated
    softmax's numerical gradient, an unused bias) has no scale of its own, and dividing by it turns round-off in
    `a` (4e-13) into a relative error of 1e287. The default, 1e-12, is for quantities of order one, whose float64
    round-off is ~1e-16: below it a reference counts as zero and the error as absolute (/ 1e-12). Pass the
    problem's own scale times a small factor when it is not of order one (tests/layer_helpers.fd_errors does)."""
    if not floor > 0:
        raise ValueError(f"floor: expected a positive number, got {floor!r}")
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), floor)) if a.size else 0.0
