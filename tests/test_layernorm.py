"""layers/layernorm.py: LayerNorm over the last axis, biased variance, eps inside the square root."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from layer_helpers import (STRICT_TOL, TORCH_TOL, assert_bad_dout_raises, assert_close, assert_grad_modes,
                           assert_grads_accumulate, fd_check, is_strict, param_grads, randomize, seeds, strict_twin,
                           torch_grads)
from minidt.backend import Generator, get_backend
from minidt.layers import LayerNorm
from minidt.layers.layernorm import layernorm_forward

lead_dims = st.lists(st.integers(1, 3), min_size=0, max_size=2)
epsilons = st.sampled_from([1e-5, 1e-3, 0.1])


def make(C: int, eps: float, seed: int, dtype: str = "float64") -> LayerNorm:
    return randomize(LayerNorm(C, eps, dtype=dtype), np.random.default_rng(seed))


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


def test_constant_row_stays_finite():
    """Variance 0: eps keeps rstd finite, the output is the bias and the input gradient is finite."""
    ln = make(4, 1e-5, 0)
    out = ln(np.full((2, 4), 3.0))
    np.testing.assert_allclose(out, np.broadcast_to(ln.bias.data, (2, 4)), atol=1e-15)
    assert np.all(np.isfinite(ln.backward(np.ones((2, 4)))))


def test_gradients_accumulate_across_two_backward_calls():
    rng = np.random.default_rng(0)
    ln = make(5, 1e-5, 0)
    x, dout = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    assert_grads_accumulate(ln, (x,), dout)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_strict_backend_equals_numpy(dtype):
    rng = np.random.default_rng(0)
    ln = make(5, 1e-5, 0, dtype)
    twin = strict_twin(ln, lambda backend: LayerNorm(5, 1e-5, backend=backend, dtype=dtype))
    b = get_backend("strict")
    x, dout = rng.normal(size=(2, 3, 5)).astype(dtype), rng.normal(size=(2, 3, 5)).astype(dtype)
    out, dx = ln(x), ln.backward(dout)
    out_s = twin(b.asarray(x))
    dx_s = twin.backward(b.asarray(dout))
    assert is_strict(out_s) and is_strict(dx_s) and all(is_strict(p.grad) for p in twin.parameters())
    assert_close({"out": out_s, "x": dx_s, **param_grads(twin)}, {"out": out, "x": dx, **param_grads(ln)},
                 STRICT_TOL if dtype == "float64" else 1e-6)


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    ln = LayerNorm(4)
    out = ln(rng.normal(size=(2, 3, 4)).astype(np.float32))
    dx = ln.backward(rng.normal(size=(2, 3, 4)).astype(np.float32))
    assert out.dtype == dx.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in ln.parameters())


def test_bad_input_names_argument_expected_and_received():
    ln = LayerNorm(4)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 4\), got \(2, 3\)"):
        ln(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="x: expected dtype float32, got float64"):
        ln(np.zeros((2, 4)))


def test_bad_dout_names_argument_expected_and_received():
    """A dout that broadcasts against x would be summed over silently."""
    assert_bad_dout_raises(LayerNorm(4), (2, 3, 4))


def test_eval_mode_differentiates_and_no_grad_keeps_nothing():
    assert_grad_modes(lambda p: LayerNorm(4, dtype="float64"), np.random.default_rng(1).normal(size=(2, 4)))
