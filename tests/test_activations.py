"""layers/activations.py: relu, silu, gelu (erf form), gelu_new (tanh form), tanh, as transformers' ACT2FN."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from layer_helpers import TORCH_TOL, assert_close, assert_grad_modes, fd_check, is_on, seeds, torch_grads, twin_tol
from minidt.backend import dtype_name
from minidt.layers import ACTIVATIONS, Activation, get_activation

NAMES = ["relu", "silu", "gelu", "gelu_new", "tanh"]
shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3)


def torch_functional(torch, name):
    """PyTorch's own function for each name."""
    F = torch.nn.functional
    return {"relu": F.relu, "silu": F.silu, "gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
            "tanh": torch.tanh}[name]


def test_the_five_reference_activations_and_nothing_else():
    assert sorted(ACTIVATIONS) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
@given(shape=shapes, seed=st.integers(**seeds), scale=st.sampled_from([0.5, 2.0, 6.0]))
def test_backward_matches_finite_differences(name, shape, seed, scale):
    """Inputs within +-4: beyond, tanh' < 1e-3 and the round-off floor of central differences (eps |f| / h, about
    1e-10) is no longer a millionth of the gradient it checks."""
    rng = np.random.default_rng(seed)
    x = np.asarray(np.clip(scale * rng.normal(size=shape), -4.0, 4.0))  # np.asarray: NumPy makes 0-d results scalars
    x[np.abs(x) < 1e-3] = 0.5  # relu has a kink at 0: keep central differences off it
    dout = rng.normal(size=shape)
    act = Activation(name)
    assert fd_check(act, lambda: act(x), dout, {"x": x}).keys() == {"x"}


@pytest.mark.parametrize("name", NAMES)
@given(shape=shapes, seed=st.integers(**seeds), scale=st.sampled_from([0.5, 2.0, 6.0]))
def test_forward_and_backward_match_torch_and_the_reference(torch, name, shape, seed, scale):
    """Against torch.nn.functional and against transformers' ACT2FN[name], the function the reference calls.
    Inputs within +-4: further out, tanh' = 1 - tanh^2 and gelu_new' = (1 + tanh)/2 + ... cancel, and one ulp of
    tanh (which NumPy and torch round apart) becomes > 1e-10 of a slope of 1e-6 (at x = -5 ours is 9e-11 from the
    exact gelu_new' and torch 3e-10). test_extreme_inputs compares the far range, relative to the largest slope."""
    from transformers.activations import ACT2FN

    rng = np.random.default_rng(seed)
    x = np.clip(scale * rng.normal(size=shape), -4.0, 4.0)  # 0-d: a NumPy scalar, which the layers must take too
    dout = rng.normal(size=shape)
    act = Activation(name)
    with np.errstate(over="ignore"):  # silu's exp(-x) overflows to inf for x << 0, correctly giving s = 0
        ours = {"out": act(x), "x": act.backward(dout)}
    for fn in (torch_functional(torch, name), ACT2FN[name]):
        xt = torch.tensor(x, requires_grad=True)
        out_t = fn(xt)
        assert_close(ours, {"out": out_t.detach().numpy(), **torch_grads(torch, out_t, dout, {"x": xt})}, TORCH_TOL)


@pytest.mark.parametrize("name, slope", [("relu", 0.0), ("silu", 0.5), ("gelu", 0.5), ("gelu_new", 0.5),
                                         ("tanh", 1.0)])
def test_value_and_slope_at_zero(name, slope):
    """f(0) = 0 for all five; f'(0) from the closed forms (relu's 0 at the kink is PyTorch's convention)."""
    forward, backward = get_activation(name)
    out, cache = forward(np.zeros(3))
    assert np.all(out == 0.0)
    np.testing.assert_allclose(backward(np.ones(3), cache), slope, rtol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_extreme_inputs_stay_finite_and_match_torch(torch, name):
    """Errors relative to the largest output and slope: saturated tails must not blow up or go NaN."""
    x = np.array([-1e4, -700.0, -40.0, -8.0, -1.0, 0.0, 1.0, 8.0, 40.0, 700.0, 1e4])
    act = Activation(name)
    with np.errstate(over="ignore"):
        out, dx = act(x), act.backward(np.ones_like(x))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dx))
    xt = torch.tensor(x, requires_grad=True)
    out_t = torch_functional(torch, name)(xt)
    assert_close({"out": out, "x": dx},
                 {"out": out_t.detach().numpy(), **torch_grads(torch, out_t, np.ones_like(x), {"x": xt})}, TORCH_TOL)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backend_equals_numpy_and_float32_stays_float32(name, dtype, device_backend):
    b = device_backend
    rng = np.random.default_rng(0)
    x, dout = (2 * rng.normal(size=(2, 3, 4))).astype(dtype), rng.normal(size=(2, 3, 4)).astype(dtype)
    act, other = Activation(name), Activation(name)
    out, dx = act(x), act.backward(dout)
    out_s = other(b.asarray(x))
    dx_s = other.backward(b.asarray(dout))
    assert is_on(out_s, b) and is_on(dx_s, b)
    assert out.dtype == dx.dtype == np.dtype(dtype)
    assert dtype_name(out_s.dtype) == dtype_name(dx_s.dtype) == dtype
    assert_close({"out": out_s, "x": dx_s}, {"out": out, "x": dx}, twin_tol(b, dtype))


def test_unknown_activation_lists_the_choices():
    with pytest.raises(ValueError, match=r"activation_function: expected one of relu, silu, gelu, gelu_new, tanh, "
                                         r"got 'gelu_fast'"):
        Activation("gelu_fast")


@pytest.mark.parametrize("name", NAMES)
def test_bad_dout_names_argument_expected_and_received(name, backend):
    act = Activation(name)
    for dout, match in [(np.ones((1, 3)), r"dout: expected shape \(2, 3\), got \(1, 3\)"),
                        (np.ones((2, 3), np.float32), "dout: expected dtype float64, got float32")]:
        act(backend.asarray(np.ones((2, 3))))
        with pytest.raises(ValueError, match=match):
            act.backward(backend.asarray(dout))


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_differentiates_and_no_grad_keeps_nothing(name, backend):
    assert_grad_modes(lambda p: Activation(name), backend.asarray(np.random.default_rng(1).normal(size=(2, 3))))
