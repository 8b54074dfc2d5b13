"""What the per-layer tests (test_linear.py ... test_block.py) share: the five checks of issue 2 as small tools.

- `fd_check`        check 1: a Module's backward against central differences, every parameter and input
- `copy_to_torch`, `torch_grads`, `assert_close`   check 2: the same pass through PyTorch / transformers
- `twin`, `twin_tol` check 4: the same module on a device backend, against NumPy (`past_kv_pass`: a pass to compare)
- `assert_causal`, `assert_left_padding_invariant`   causality and padding invariance, for attention and blocks
- `assert_grads_accumulate`, `assert_bad_dout_raises`, `assert_grad_modes`   what every Module must do
- `randomize`       weights away from their init (zero biases and unit LayerNorm weights hide terms of a backward)
- `make_mask`, `fully_masked`, `reference_mask`   padding masks, and the 4-D mask transformers builds from one
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import assume

from conftest import numerical_grad, rel_error
import minidt
from minidt import to_numpy
from minidt.backend import Backend, backend_of, device, dtype_name, is_backend_array
from minidt.layers import LayerNorm, Module

FD_TOL = 1e-6  # check 1: backward vs central finite differences, float64
FD_FLOOR = 1e-3  # see fd_errors
TORCH_TOL = 1e-10  # check 2: forward and backward vs PyTorch / transformers, float64

seeds = dict(min_value=0, max_value=2**32 - 1)


def randomize(module: Module, rng: np.random.Generator, scale: float = 0.5) -> Module:
    """Every parameter drawn afresh (float64 or the module's dtype): LayerNorm weights 1 + N(0, 0.3^2), the rest
    N(0, scale^2)."""
    for m in module.modules():
        for name, p in vars(m).items():
            if not hasattr(p, "accumulate"):
                continue
            base, s = (1.0, 0.3) if isinstance(m, LayerNorm) and name == "weight" else (0.0, scale)
            p.data = m.backend.asarray(base + s * rng.normal(size=p.shape), dtype=p.data.dtype)
    return module


def fd_errors(loss: Callable[[], float], pairs: dict[str, tuple[Any, np.ndarray]], scale: float) -> dict[str, float]:
    """Check 1: each analytic gradient against central differences of `loss` at the array it differentiates
    (float64, perturbed in place and restored), within FD_TOL. pairs: {name: (analytic gradient, array)}.

    Central differences (step h = 1e-6) cannot see below their round-off floor, about eps * scale / h = 1e-10 *
    scale with scale = sum |out * dout| (the size of the terms the loss sums): a gradient near that is noise, and
    no relative error of it means anything. So an example where some nonzero numerical gradient is below
    FD_FLOOR * scale (the noise is then at most ~1e-7 of it) is rejected with `assume`, and hypothesis draws
    another. A bug still fails: it shows in the well-conditioned examples, and if it left only ill-conditioned
    ones, hypothesis fails the test as unsatisfiable. (A larger h lowers the floor but raises the truncation error
    h^2 |f^(3)| / 6, which a LayerNorm over 2 features with var ~ eps makes large.) A numerical gradient that is
    exactly zero (a saturated softmax: every difference rounds to 0) is kept and measured against the floor: the
    analytic one must then be below FD_TOL * FD_FLOOR * scale, ten times the noise (or 1e-18 when scale is 0: a
    relu that zeroed every output). Returns {name: relative error}."""
    errors = {}
    for name, (analytic, x) in pairs.items():
        numerical = numerical_grad(loss, x)
        top = float(np.max(np.abs(numerical))) if numerical.size else 0.0
        assume(not 0.0 < top < FD_FLOOR * scale)
        errors[name] = rel_error(to_numpy(analytic), numerical, floor=max(FD_FLOOR * scale, 1e-12))  # scale 0: relu
    bad = {name: e for name, e in errors.items() if not e <= FD_TOL}
    assert not bad, f"backward disagrees with central differences (relative errors): {bad}"
    return errors


def fd_check(module: Module, run: Callable[[], Any], dout: np.ndarray,
             inputs: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Check 1 for a Module in float64. `run()` is a forward pass that reads the module's parameters and the arrays
    of `inputs` and returns the output; the loss is sum(out * dout). `inputs` names the float input whose gradient
    module.backward returns (dx). Every parameter and input gradient is compared (fd_errors)."""
    module.zero_grad()
    scale = float(np.sum(np.abs(run() * dout)))
    dx = module.backward(dout)
    pairs = {name: (p.grad, p.data) for name, p in module.named_parameters()}
    for name, x in (inputs or {}).items():
        pairs[name] = (dx, x)
    return fd_errors(lambda: float(np.sum(run() * dout)), pairs, scale)


def copy_to_torch(torch, ours: Module, ref) -> None:
    """Copy our parameters into a torch module with the same parameter names (the reference's names)."""
    theirs = dict(ref.named_parameters())
    assert set(theirs) == {name for name, _ in ours.named_parameters()}
    with torch.no_grad():
        for name, p in ours.named_parameters():
            theirs[name].copy_(torch.from_numpy(np.array(to_numpy(p.data))))


def torch_grads(torch, out, dout: np.ndarray, tensors: dict[str, Any]) -> dict[str, np.ndarray]:
    """Backpropagate sum(out * dout) in torch; the gradient of each named tensor (zeros where torch has None)."""
    (out * torch.from_numpy(np.array(dout))).sum().backward()
    return {name: (t.grad if t.grad is not None else torch.zeros_like(t)).detach().numpy()
            for name, t in tensors.items()}


def assert_close(ours: dict[str, Any], theirs: dict[str, Any], tol: float) -> dict[str, float]:
    """rel_error of every named pair within tol; returns the errors."""
    assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))
    errors = {name: rel_error(to_numpy(ours[name]), to_numpy(theirs[name])) for name in ours}
    bad = {name: e for name, e in errors.items() if not e <= tol}
    assert not bad, f"relative errors above {tol:g}: {bad}"
    return errors


def param_grads(module: Module) -> dict[str, Any]:
    return {name: p.grad for name, p in module.named_parameters()}


def assert_grads_accumulate(module: Module, inputs: tuple, dout: Any) -> None:
    """Two forward/backward passes on the same input leave twice one pass's gradient in every .grad (host inputs,
    moved to the module's backend)."""
    b = module.backend
    inputs, dout = tuple(b.asarray(x) for x in inputs), b.asarray(dout)
    module(*inputs)
    module.backward(dout)
    once = {n: np.array(to_numpy(g)) for n, g in param_grads(module).items()}
    module(*inputs)
    module.backward(dout)
    for n, g in param_grads(module).items():
        assert rel_error(to_numpy(g), 2 * once[n]) <= 1e-15, n


def assert_bad_dout_raises(module: Module, shape: tuple[int, ...]) -> None:
    """After a float32 forward on x of `shape`, a dout that would broadcast against the output (batch 1) or has
    the wrong dtype is a ValueError naming dout, the expected and the received value (a broadcast dout would be
    summed over silently). Arrays of the module's backend."""
    b = module.backend
    got = (1, *shape[1:])
    for dout, match in [(np.ones(got, np.float32), re.escape(f"dout: expected shape {shape}, got {got}")),
                        (np.ones(shape), "dout: expected dtype float32, got float64")]:
        module(b.asarray(np.ones(shape, np.float32)))
        with pytest.raises(ValueError, match=match):
            module.backward(b.asarray(dout))


def assert_grad_modes(build: Callable[[float], Module], x: np.ndarray) -> None:
    """The two switches, as in PyTorch. `build(p)` makes the module with every dropout probability p (the same
    weights for any p). Eval mode draws no dropout (two passes agree) and still differentiates: its forward and
    backward equal those of training mode with dropout 0, to the bit. Under no_grad() a forward keeps no cache
    anywhere in the tree and backward names `no_grad`; each forward serves one backward. x: an array of the
    backend under test."""
    def out(y):
        return y[0] if isinstance(y, tuple) else y  # attention and blocks return (y, probs, present)

    def grads(module):
        return {n: np.array(to_numpy(p.grad)) for n, p in module.named_parameters()}

    module, plain = build(0.5).eval(), build(0.0)
    np.testing.assert_array_equal(to_numpy(out(module(x))), to_numpy(out(module(x))))
    y = out(module(x))
    dout = backend_of(y).asarray(np.random.default_rng(0).normal(size=y.shape), dtype_name(y.dtype))
    dx = module.backward(dout)
    with pytest.raises(RuntimeError, match="no forward pass to differentiate"):
        module.backward(dout)  # one forward serves one backward
    np.testing.assert_array_equal(to_numpy(out(plain(x))), to_numpy(y))
    np.testing.assert_array_equal(to_numpy(plain.backward(dout)), to_numpy(dx))
    want = grads(plain)
    for name, g in grads(module).items():
        np.testing.assert_array_equal(g, want[name], err_msg=name)
    with minidt.no_grad():
        module(x)
    assert all(getattr(m, "cache", None) is None for m in module.modules())
    with pytest.raises(RuntimeError, match=rf"{type(module).__name__}.backward: no forward pass to differentiate.*"
                                           r"no_grad"):
        module.backward(dout)


# --- sequence properties, for attention and the block (forward(x, mask, ...) -> (y, probs, present)) ---------


def assert_causal(layer: Module, x: np.ndarray, mask: np.ndarray | None, t: int) -> None:
    """Changing tokens after position t changes no output and no attention weight up to t; a gradient that is
    zero after t gives the same parameter gradients whatever those later tokens are, and sends them none."""
    dout = np.random.default_rng(1).normal(size=x.shape)
    dout[:, t + 1:] = 0.0
    y, probs, _ = layer(x, mask)
    dx = layer.backward(dout)
    grads = {n: g.copy() for n, g in param_grads(layer).items()}
    x2 = x.copy()
    x2[:, t + 1:] = np.random.default_rng(2).normal(size=x2[:, t + 1:].shape)
    layer.zero_grad()
    y2, probs2, _ = layer(x2, mask)
    dx2 = layer.backward(dout)
    np.testing.assert_array_equal(y2[:, : t + 1], y[:, : t + 1])
    np.testing.assert_array_equal(probs2[:, :, : t + 1], probs[:, :, : t + 1])
    np.testing.assert_array_equal(dx2[:, : t + 1], dx[:, : t + 1])
    assert np.all(dx2[:, t + 1:] == 0.0) and np.all(dx[:, t + 1:] == 0.0)
    for n, g in param_grads(layer).items():
        np.testing.assert_array_equal(g, grads[n], err_msg=n)
    assert np.all(np.triu(probs, 1) == 0.0)  # no weight on a future key


def assert_left_padding_invariant(layer: Module, x: np.ndarray, P: int) -> None:
    """P padded steps (garbage values) in front, masked: the real tokens' outputs and weights, every parameter
    gradient and dx are those of the unpadded sequence; the padded keys get weight 0 and the padded inputs
    gradient 0 (for a dout that is zero on the padded queries, as a masked loss gives)."""
    B, T, C = x.shape
    rng = np.random.default_rng(5)
    dout = rng.normal(size=x.shape)
    y, probs, _ = layer(x)
    dx = layer.backward(dout)
    grads = {n: g.copy() for n, g in param_grads(layer).items()}
    x_p = np.concatenate([10 * rng.normal(size=(B, P, C)), x], axis=1)
    mask = np.concatenate([np.zeros((B, P)), np.ones((B, T))], axis=1)
    dout_p = np.concatenate([np.zeros((B, P, C)), dout], axis=1)
    layer.zero_grad()
    y_p, probs_p, _ = layer(x_p, mask)
    dx_p = layer.backward(dout_p)
    assert rel_error(y_p[:, P:], y) <= 1e-12
    assert rel_error(probs_p[:, :, P:, P:], probs) <= 1e-12 and np.all(probs_p[:, :, P:, :P] == 0.0)
    assert rel_error(dx_p[:, P:], dx) <= 1e-12 and np.all(dx_p[:, :P] == 0.0)
    for n, g in param_grads(layer).items():
        assert rel_error(g, grads[n]) <= 1e-12, n


def past_kv_pass(layer: Module, x: Any, mask: Any, dout: Any, split: int = 2) -> dict[str, Any]:
    """The first `split` tokens with use_cache, then the rest with that past_kv, then backward: every output,
    the returned keys and values, dx and every parameter gradient, by name."""
    _, _, past = layer(x[:, :split, :], mask[:, :split], use_cache=True)  # full indices: strict arrays too
    y, probs, (k, v) = layer(x[:, split:, :], mask, past_kv=past, use_cache=True)
    dx = layer.backward(dout[:, split:, :])
    return {"y": y, "probs": probs, "k": k, "v": v, "x": dx, **param_grads(layer)}


def twin(module: Module, make: Callable[..., Module], backend: Backend) -> Module:
    """make(backend=backend) with `module`'s parameter values copied onto that backend's device."""
    other = make(backend=backend)
    for (name, p), (name2, q) in zip(module.named_parameters(), other.named_parameters()):
        assert name == name2
        q.data = backend.asarray(to_numpy(p.data), dtype=dtype_name(p.data.dtype))
    return other


def twin_tol(backend: Backend, dtype: str) -> float:
    """Check 4's relative tolerance: a backend against NumPy, the same math on the same numbers. strict wraps
    NumPy: the same operations in the same order, equal up to the round-off of the few kernels that take another
    route there (the one-hot embedding backward). A GPU sums in other orders (cuBLAS, CuPy's reductions) and fuses
    multiply-adds: float64 agrees to round-off, float32 to float32's precision times the short sums here."""
    if dtype == "float64":
        return 1e-12
    return 1e-5 if backend.name == "cupy" else 1e-6


def twin_dropout(backend: Backend, p: float) -> float:
    """The dropout probability for a comparison with NumPy: p where the backend draws NumPy's masks (strict), 0 on
    cupy, whose masks are its own (drawn on the GPU; test_dropout.py checks them there)."""
    return 0.0 if backend.name == "cupy" else p


def is_on(x: Any, backend: Backend) -> bool:
    """x is an array of `backend`, on its device."""
    return is_backend_array(x, backend) and (backend.name == "numpy" or device(x) == backend.device)


# --- masks, for attention and the block ------------------------------------------------------------------


def make_mask(rng: np.random.Generator, B: int, T: int, kind: str | None) -> np.ndarray | None:
    """None; "left": each row left-padded by 0 .. T-1 steps; "random": any pattern with the last step real."""
    if kind is None:
        return None
    if kind == "left":
        mask = np.ones((B, T))
        for b in range(B):
            mask[b, : rng.integers(0, T)] = 0.0
        return mask
    mask = (rng.random((B, T)) > 0.4).astype(np.float64)
    mask[:, -1] = 1.0
    return mask


def fully_masked(mask: np.ndarray | None, B: int, Tq: int, Tk: int) -> np.ndarray:
    """(B, Tq) bool: query rows whose every visible key (positions <= its own) is padded."""
    if mask is None:
        return np.zeros((B, Tq), bool)
    seen = np.cumsum(mask, axis=1)[:, Tk - Tq:]  # real keys visible to each query
    return seen == 0


def reference_mask(torch, x_t, mask: np.ndarray | None):
    """The 4-D additive mask transformers' GPT2Model hands its blocks, from create_causal_mask itself (keyword
    names looked up: they moved within 5.x)."""
    from transformers import GPT2Config
    from transformers.masking_utils import create_causal_mask

    config = GPT2Config(n_embd=x_t.shape[-1], n_head=1)
    config._attn_implementation = "eager"
    T = x_t.shape[1]
    params = inspect.signature(create_causal_mask).parameters
    kw = {"config": config, "attention_mask": None if mask is None else torch.from_numpy(mask).long()}
    kw["inputs_embeds" if "inputs_embeds" in params else "input_embeds"] = x_t
    for name in ("cache", "past_key_values"):
        if name in params:
            kw[name] = None
    if "cache_position" in params:
        kw["cache_position"] = torch.arange(T)
    if "position_ids" in params:
        kw["position_ids"] = torch.arange(T)[None]
    out = create_causal_mask(**kw)
    assert out is not None and out.ndim == 4  # eager attention needs the explicit mask
    return out
