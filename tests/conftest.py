"""Shared test helpers.

`reference()` imports torch (and transformers): a test that needs the reference skips when it is missing on a
developer's machine, and FAILS when CI=true, so a broken install can never turn the parity suite green by skipping.
"""

from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import HealthCheck, settings

from minidt.gradcheck import numerical_grad, rel_error  # noqa: F401  (tests import them from here)

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
