"""Shared test helpers.

`reference()` imports torch (and transformers): a test that needs the reference skips when it is missing on a
developer's machine, and FAILS when CI=true, so a broken install can never turn the parity suite green by skipping.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("minidt", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile("minidt")


def require(name: str):
    """Import a reference package, or skip (fail under CI=true)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"reference package {name!r} is missing under CI=true: {e}")
        pytest.skip(f"reference package {name!r} not installed: pip install -e '.[test]'")


@pytest.fixture
def torch():
    t = require("torch")
    t.set_default_dtype(t.float64)
    yield t
    t.set_default_dtype(t.float32)


def rel_error(a, b) -> float:
    """max |a - b| / max(|b|, tiny): one number per comparison, as llm.c's test prints."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)) if a.size else 0.0


def numerical_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of a scalar f at x (float64), entry by entry. x is perturbed in place and
    restored."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g
