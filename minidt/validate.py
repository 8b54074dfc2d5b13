"""Host-side checks of values that come in from outside (the model's inputs, checkpoints, datasets).

Each raises a ValueError whose message starts with the name it is given ("states", "state_dict['wpe.weight']",
"D4RL file 'x.hdf5': rewards"), then says what was expected and what was received. They run on NumPy arrays,
on the host, before anything is moved to a device: there, a check would cost a device synchronization.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import to_numpy

REAL_KINDS = "biuf"  # NumPy's dtype kinds for bool, signed and unsigned integers, floating point


def said(e: BaseException) -> str:
    """What a library's exception says, on one line ("OSError: Unable to open file ..."), for a message of ours."""
    return f"{type(e).__name__}: " + " ".join(str(e).split())


def host_array(name: str, x: Any) -> np.ndarray:
    """x (a NumPy array, nested list, scalar, torch tensor, or an array of another backend) -> a NumPy array of
    real numbers (bool, integer or floating point), on the host. Refuses ragged lists, strings, objects and
    complex numbers by name. A torch bfloat16 tensor (NumPy has no bfloat16) comes back as float32."""
    if type(x).__module__.startswith("torch"):  # no torch import: the tensor's own module tells
        x = _torch_to_numpy(name, x)
    try:
        a = np.asarray(to_numpy(x))
    except (ValueError, TypeError, RuntimeError) as e:  # ragged lists; objects NumPy cannot read
        raise ValueError(f"{name}: expected an array of real numbers, got a {type(x).__name__} that is not one "
                         f"({said(e)})") from None
    if a.dtype.kind not in REAL_KINDS:
        raise ValueError(f"{name}: expected real numbers (bool, integer or floating point), got dtype {a.dtype}")
    return a


def _torch_to_numpy(name: str, t: Any) -> np.ndarray:
    import torch

    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected an array or a tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise ValueError(f"{name}: expected a dense tensor, got layout {t.layout} (call .to_dense() first)")
    if t.is_complex():
        raise ValueError(f"{name}: expected real numbers (bool, integer or floating point), got dtype {t.dtype}")
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def finite(name: str, a: np.ndarray, dtype: "str | np.dtype | None" = None) -> np.ndarray:
    """a cast to `dtype` ("float32", ...; default: its own), refusing NaN and inf: those in `a` and those the cast
    makes (a float64 1e39 is inf in float32). The error names the first bad entry's index."""
    out = a
    if dtype is not None and a.dtype != np.dtype(dtype):
        with np.errstate(over="ignore", invalid="ignore"):
            out = a.astype(dtype)
    if out.dtype.kind != "f" or np.isfinite(out).all():
        return out
    i = tuple(int(j) for j in np.argwhere(~np.isfinite(out))[0])
    v = a[i]
    if np.isfinite(v):
        raise ValueError(f"{name}: expected finite numbers within {out.dtype}'s range (|x| <= "
                         f"{np.finfo(out.dtype).max:.4g}), got {v!r} at index {i}")
    raise ValueError(f"{name}: expected finite numbers, got {v} at index {i}")


def binary(name: str, a: np.ndarray) -> np.ndarray:
    """a must hold only 0 and 1 (an attention mask: 1 real, 0 padding)."""
    bad = (a != 0) & (a != 1)
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise ValueError(f"{name}: expected only 0 (padding) and 1 (real), got {a[i]} at index {i}")
    return a


def indices(name: str, a: np.ndarray, n: int, what: str) -> np.ndarray:
    """a must hold integers in [0, n) (n = the size `what` of the table they index)."""
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name}: expected an integer dtype, got {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= n):
        raise ValueError(f"{name}: expected values in [0, {n - 1}] ({what} {n}), got values in "
                         f"[{a.min()}, {a.max()}]")
    return a


def one_hot(name: str, a: np.ndarray) -> np.ndarray:
    """a (..., n) must hold one-hot rows: each all 0 but one 1, or all 0 (padding, or the placeholder action a
    rollout feeds at the step it is predicting). A discrete model's actions come in this way."""
    bad = ((a != 0) & (a != 1)).any(axis=-1) | (a.sum(axis=-1) > 1)
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise ValueError(f"{name}: expected one-hot rows (a discrete model: one 1 and zeros, or all zeros at "
                         f"padding), got {a[i].tolist()} at index {i}")
    return a
