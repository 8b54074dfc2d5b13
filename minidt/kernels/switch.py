"""The kernel path's switch: whether a layer function hands an array to a kernel (minidt/kernels) or runs its
NumPy twin. A module of its own, importing nothing, so that the layers can ask without importing CuPy or the
launchers (and the coursework's sandbox, which loads the layer files alone, can load it too).

Off unless MINIDT_KERNELS=1 is set in the environment (or `enable()` is called): until a GPU run has compared each
kernel with its twin, the array-op path stays what CuPy users compute."""

from __future__ import annotations

import os
from typing import Any

ENABLED = os.environ.get("MINIDT_KERNELS", "0") not in ("", "0")
DEVICE_MODULE = "cupy"  # the arrays that go to the kernels: CuPy's (tests/kernel_shim points this at NumPy's)


def enable(on: bool = True) -> None:
    """Switch the kernel path on (or off) for this process: what MINIDT_KERNELS=1 does at import."""
    global ENABLED
    ENABLED = bool(on)


def kernel_path(x: Any) -> bool:
    """Whether x goes to a kernel: the path is on and x is a CuPy array. The layer functions ask this first; with
    the path off (the default) it costs one function call and one global read."""
    return ENABLED and type(x).__module__.startswith(DEVICE_MODULE)


def dropout_threshold(p: float) -> int:
    """Dropout keeps an entry whose 32 random bits fall below this: round((1 - p) 2^32), Generator.bernoulli's
    rule, so P(keep) = 1 - p to within 2^-32. Shared by the kernels' launchers and their NumPy twin."""
    return min(round((1.0 - p) * 2**32), 2**32 - 1)
