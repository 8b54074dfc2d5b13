"""layers/layernorm.py: LayerNorm over the last axis, biased variance, eps inside the square root."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from layer_helpers import (TORCH_TOL, assert_bad_dout_raises, assert_close, assert_grad_modes,
                           assert_grads_accumulate, fd_check, is_on, param_grads, randomize, seeds, torch_grads, twin,
                           twin_tol)
from minidt import to_numpy
from minidt.layers import LayerNorm
from minidt.layers.layernorm import layernorm_forward

lead_dims = st.lists(st.integers(1, 3), min_size=0, max_size=2)
epsilons = st.sampled_from([1e-5, 1e-3, 0.1])


def make(C: int, eps: float, seed: int, dtype: str = "float64", backend: str = "numpy") -> LayerNorm:
    return randomize(LayerNorm(C, eps, dtype=dtype, backend=backend), np.random.default_rng(seed))


def well_conditioned(x: np.ndarray, eps: float) -> bool:
    """Over 2 features xhat = +-sqrt(var / (var + eps)): its x-gradient is O(eps / var), computed by cancelling O(1)
    terms, so for eps << var it is round-off (the same in torch) and no relative error of it means anything.
    2 features are checked where eps / var >= 0.1."""
    return x.shape[-1] >= 3 or bool(np.all(eps / np.var(x, axis=-1) >= 0.1))


@given(lead=lead_dims, C=st.integers(2, 6), eps=epsilons, seed=st.integers(**seeds),
       scale=st.sampled_from([0.3, 1.0]), shift=st.sampled_from([0.0, 5.0]))
def test_backward_matches_finite_differences(lead, C, eps, seed, scale, shift):
    """Input, weight and bias, on rows of small and large spread and offset (the mean and rstd terms)."""
    rng = np.random.default_rng(seed)
    ln = make(C, eps, seed)
    x = shift + scale * rng.normal(size=(*lead, C))
    assume(well_conditioned(x, eps))
    dout = rng.normal(size=(*lead, C))
    assert fd_check(ln, lambda: ln(x), dout, {"x": x}).keys() == {"x", "weight", "bias"}


@given(lead=lead_dims, C=st.integers(2, 7), eps=epsilons, seed=st.integers(**seeds))
def test_forward_and_backward_match_torch(torch, lead, C, eps, seed):
    """C >= 2 (and C = 2 only where well conditioned): over one feature xhat is 0, exactly here, and round-off
    (1e-15) in torch, whose weight gradient is then nothing but that round-off."""
    rng = np.random.default_rng(seed)
    ln = make(C, eps, seed)
    x = rng.normal(size=(*lead, C))
    assume(well_conditioned(x, eps))
    dout = rng.normal(size=(*lead, C))
    out, dx = ln(x), ln.backward(dout)
    xt = torch.tensor(x, requires_grad=True)
    w, b = torch.tensor(ln.weight.data, requires_grad=True), torch.tensor(ln.bias.data, requires_grad=True)
    out_t = torch.nn.functional.layer_norm(xt, (C,), w, b, eps)
    theirs = torch_grads(torch, out_t, dout, {"x": xt, "weight": w, "bias": b})
    assert_close({"out": out, "x": dx, **param_grads(ln)}, {"out": out_t.detach().numpy(), **theirs}, TORCH_TOL)


@given(lead=lead_dims, C=st.integers(2, 8), seed=st.integers(**seeds), shift=st.sampled_from([0.0, 100.0]))
def test_rows_have_mean_zero_and_variance_one_before_the_affine(lead, C, seed, shift):
    """xhat = (x - mean) * rstd has mean 0 and (biased) variance var / (var + eps) per row: 1 as eps -> 0."""
    rng = np.random.default_rng(seed)
    x = shift + rng.uniform(0.5, 2.0) * rng.normal(size=(*lead, C))
    eps = 1e-5
    xhat, _ = layernorm_forward(x, np.ones(C), np.zeros(C), eps)
    var = np.var(x, axis=-1)  # biased, as LayerNorm's
    np.testing.assert_allclose(np.mean(xhat, axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.var(xhat, axis=-1), var / (var + eps), rtol=1e-12)
    assert np.all(np.abs(np.var(xhat, axis=-1) - 1.0) <= eps / var + 1e-12)
    # and the module applies the affine on top of exactly that
    ln = make(C, eps, seed)
    np.testing.assert_allclose(ln(x), xhat * ln.weight.data + ln.bias.data, rtol=1e-13, atol=1e-13)


def test_constant_row_stays_finite(backend):
    """Variance 0: eps keeps rstd finite, the output is the bias and the input gradient is finite."""
    ln = make(4, 1e-5, 0, backend=backend)
    out = ln(backend.asarray(np.full((2, 4), 3.0)))
    np.testing.assert_allclose(to_numpy(out), np.broadcast_to(to_numpy(ln.bias.data), (2, 4)), atol=1e-15)
    assert np.all(np.isfinite(to_numpy(ln.backward(backend.asarray(np.ones((2, 4)))))))


def test_gradients_accumulate_across_two_backward_calls(backend):
    rng = np.random.default_rng(0)
    ln = make(5, 1e-5, 0, backend=backend)
    x, dout = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    assert_grads_accumulate(ln, (x,), dout)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backend_equals_numpy(dtype, device_backend):
    b = device_backend
    rng = np.random.default_rng(0)
    ln = make(5, 1e-5, 0, dtype)
    other = twin(ln, lambda backend: LayerNorm(5, 1e-5, backend=backend, dtype=dtype), b)
    x, dout = rng.normal(size=(2, 3, 5)).astype(dtype), rng.normal(size=(2, 3, 5)).astype(dtype)
    out, dx = ln(x), ln.backward(dout)
    out_s = other(b.asarray(x))
    dx_s = other.backward(b.asarray(dout))
    assert is_on(out_s, b) and is_on(dx_s, b) and all(is_on(p.grad, b) for p in other.parameters())
    assert_close({"out": out_s, "x": dx_s, **param_grads(other)}, {"out": out, "x": dx, **param_grads(ln)},
                 twin_tol(b, dtype))


def test_float32_stays_float32(backend):
    rng = np.random.default_rng(0)
    ln = LayerNorm(4, backend=backend)
    out = ln(backend.asarray(rng.normal(size=(2, 3, 4)), "float32"))
    dx = ln.backward(backend.asarray(rng.normal(size=(2, 3, 4)), "float32"))
    assert out.dtype == dx.dtype == backend.xp.float32
    assert all(p.grad.dtype == backend.xp.float32 for p in ln.parameters())


def test_bad_input_names_argument_expected_and_received(backend):
    ln = LayerNorm(4, backend=backend)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 4\), got \(2, 3\)"):
        ln(backend.asarray(np.zeros((2, 3), np.float32)))
    with pytest.raises(ValueError, match="x: expected dtype float32, got float64"):
        ln(backend.asarray(np.zeros((2, 4))))


def test_bad_dout_names_argument_expected_and_received(backend):
    """A dout that broadcasts against x would be summed over silently."""
    assert_bad_dout_raises(LayerNorm(4, backend=backend), (2, 3, 4))


def test_eval_mode_differentiates_and_no_grad_keeps_nothing(backend):
    assert_grad_modes(lambda p: LayerNorm(4, backend=backend, dtype="float64"),
                      backend.asarray(np.random.default_rng(1).normal(size=(2, 4))))
