"""What a failed check adds to its message: the portable way to write what the strict backend refused, and a word
about precision when a result is float32, or off by float32's round-off.

The strict backend (array_api_strict on a device of its own) refuses exactly what breaks on a GPU: NumPy
functions on its arrays, arrays made on the default device, methods and functions outside the Array API
standard. Its refusals name the symptom ("Can't convert array on the 'Device('device1')' device to a NumPy
array"); the hints name the habit behind it and the standard's spelling.
"""

from __future__ import annotations

import re

import numpy as np

FLOAT32_ROUNDOFF = 3e-6  # a float64 result this close (relative) has float32 round-off in it, not a wrong formula

METHODS = {  # NumPy ndarray methods and their Array API spelling
    "reshape": "xp.reshape(x, shape)", "astype": "xp.astype(x, dtype)", "copy": "xp.asarray(x, copy=True)",
    "transpose": "xp.permute_dims(x, axes), or xp.matrix_transpose(x) for the last two axes",
    "flatten": "xp.reshape(x, (-1,))", "ravel": "xp.reshape(x, (-1,))", "dot": "x @ y",
    "item": "float(x) (a read of the device: only outside the math)",
}
FUNCTIONS = {  # NumPy functions the standard names differently or not at all
    "concatenate": "xp.concat", "power": "xp.pow", "absolute": "xp.abs", "arccos": "xp.acos",
    "arcsin": "xp.asin", "arctan": "xp.atan", "transpose": "xp.permute_dims or xp.matrix_transpose",
    "einsum": "@ (xp.matmul) with xp.sum, or xp.tensordot", "dot": "@ (xp.matmul) or xp.vecdot",
    "float_": "xp.float64", "bool_": "xp.bool",
}
STRICT = (  # (what the error says, the hint given the pattern's group)
    (r"'Array' object has no attribute '(\w+)'",
     lambda m: f"array_api_strict arrays have no .{m} method (a NumPy habit): use the namespace's function, "
               + METHODS.get(m, f"xp.{m}(x, ...)") + ", with xp = array_namespace(x)"),
    (r"module 'array_api_strict' has no attribute '(\w+)'",
     lambda m: f"xp.{m} is NumPy's name, not the Array API standard's: "
               + (f"use {FUNCTIONS[m]}" if m in FUNCTIONS else "the standard's functions are listed at "
                  "https://data-apis.org/array-api/latest/API_specification/")),
    (r"Can't convert array on the .* device to a NumPy array",
     lambda m: "a NumPy function (np.sqrt, np.exp, np.maximum, ...) or np.array was called on an array of the strict "
               "backend, which NumPy cannot read (nor a GPU's): call the same function of the inputs' namespace, "
               "xp.sqrt(x) with xp = array_namespace(x)"),
    (r"Expected Array or Python scalar; got <class 'numpy\.(\w+)'>",
     lambda m: f"a NumPy {'array' if m == 'ndarray' else m} was mixed with an array of the strict backend (x * "
               "np.float64(2), x + np.ones(3)): use a Python float (2.0), or make the array with the inputs' "
               "namespace on their device, xp.ones(n, dtype=x.dtype, device=device(x))"),
    (r"Two scalars not allowed",
     lambda m: "xp.where(cond, a, b) takes at most one Python scalar (NumPy takes two): make one of them an array "
               "of the inputs' dtype and device, e.g. xp.where(cond, xp.full(cond.shape, -math.inf, dtype=x.dtype, "
               "device=device(x)), 0.0)"),
    (r"Arrays from two different devices",
     lambda m: "an array made without device= (xp.zeros, xp.ones, xp.arange, xp.asarray, xp.full) is on the "
               "default device, while the strict backend keeps the inputs on another, as a GPU would: pass "
               "device=device(x) (from minidt.backend) whenever you create an array"),
    (r"has type\(i\)=<class 'list'>",
     lambda m: "a Python list as an index (x[[0, 1]]) is not in the standard: xp.take(x, indices, axis=...) with "
               "indices an integer array on the inputs' device"),
    (r"multi-axes index only specifies",
     lambda m: "the standard wants an index for every axis: x[i, ...] (a trailing ellipsis), x[:, None, ...]; and it "
               "has no assignment through an integer array (w[ids] += g): use scatter_add from minidt.backend"),
    (r"object of type 'Array' has no len\(\)", lambda m: "len(x) is not in the standard: x.shape[0]"),
)
STRICT_GENERAL = ("the strict backend rejects NumPy calls on its arrays and arrays made without device=; use "
                  "xp = array_namespace(x) and the Array API standard")


def strict_hint(error: str) -> str:
    """The hint for an exception raised on the strict backend by code that runs on NumPy."""
    for pattern, hint in STRICT:
        found = re.search(pattern, error)
        if found:
            return "hint (strict backend): " + hint(found.group(1) if found.groups() else None)
    return "hint: " + STRICT_GENERAL


def precision_hint(got: np.ndarray, err: float) -> str:
    """For a comparison that failed with relative error err: '' or a sentence about float32."""
    if got.dtype.kind == "f" and got.dtype != np.float64:
        return (f"; the result is {got.dtype}, the inputs float64: keep the inputs' dtype (dtype=x.dtype when you "
                "make an array; a float32 array or np.float32 constant anywhere makes the result float32)")
    if err <= FLOAT32_ROUNDOFF:
        return ("; an error this small is float32's round-off (7 significant digits), not a wrong formula: is an "
                "intermediate float32 (an array made with dtype=float32, a np.float32 constant)?")
    return ""
