"""layers/linear.py: Conv1D (weight (in, out), x @ W + b) and Linear (weight (out, in), x @ W.T + b)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from layer_helpers import (TORCH_TOL, assert_close, assert_grad_modes, assert_grads_accumulate, copy_to_torch,
                           fd_check, is_on, param_grads, randomize, seeds, torch_grads, twin, twin_tol)
from minidt.backend import Generator
from minidt.layers import Conv1D, Linear

LAYERS = {"conv1d": Conv1D, "linear": Linear}

lead_dims = st.lists(st.integers(1, 3), min_size=0, max_size=2)  # 0..2 leading dimensions, flattened inside


def make(kind: str, I: int, O: int, seed: int, dtype: str = "float64", scale: float = 0.5):
    """The layer on NumPy, weights drawn away from the init."""
    return randomize(LAYERS[kind](I, O, dtype=dtype, backend="numpy"), np.random.default_rng(seed), scale)


@pytest.mark.parametrize("kind", LAYERS)
@given(lead=lead_dims, I=st.integers(1, 5), O=st.integers(1, 5), seed=st.integers(**seeds),
       scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_backward_matches_finite_differences(kind, lead, I, O, seed, scale):
    rng = np.random.default_rng(seed + 1)
    layer = make(kind, I, O, seed, scale=scale)
    x = scale * rng.normal(size=(*lead, I))
    dout = rng.normal(size=(*lead, O))
    errors = fd_check(layer, lambda: layer(x), dout, {"x": x})
    assert set(errors) == {"x", "weight", "bias"}


@pytest.mark.parametrize("kind", LAYERS)
@given(lead=lead_dims, I=st.integers(1, 6), O=st.integers(1, 6), seed=st.integers(**seeds))
def test_forward_and_backward_match_torch(torch, kind, lead, I, O, seed):
    """Conv1D against transformers' own Conv1D; Linear against torch.nn.functional.linear."""
    from transformers.pytorch_utils import Conv1D as RefConv1D

    rng = np.random.default_rng(seed)
    layer = make(kind, I, O, seed)
    x = rng.normal(size=(*lead, I))
    dout = rng.normal(size=(*lead, O))
    out = layer(x)
    dx = layer.backward(dout)

    xt = torch.tensor(x, requires_grad=True)
    if kind == "conv1d":
        ref = RefConv1D(O, I)  # transformers' argument order: (nf = out features, nx = in features)
        copy_to_torch(torch, layer, ref)
        out_t = ref(xt)
        tensors = dict(ref.named_parameters())
    else:
        tensors = {"weight": torch.tensor(layer.weight.data, requires_grad=True),
                   "bias": torch.tensor(layer.bias.data, requires_grad=True)}
        out_t = torch.nn.functional.linear(xt, tensors["weight"], tensors["bias"])
    theirs = torch_grads(torch, out_t, dout, {"x": xt, **tensors})
    assert_close({"out": out, "x": dx, **param_grads(layer)}, {"out": out_t.detach().numpy(), **theirs}, TORCH_TOL)


@pytest.mark.parametrize("kind", LAYERS)
def test_layouts_are_the_references(kind):
    """Conv1D holds (in, out) and computes x @ W; Linear holds (out, in) and computes x @ W.T."""
    layer = make(kind, 3, 2, 0)
    assert layer.weight.shape == ((3, 2) if kind == "conv1d" else (2, 3))
    x = np.random.default_rng(0).normal(size=(4, 3))
    W = layer.weight.data if kind == "conv1d" else layer.weight.data.T
    np.testing.assert_allclose(layer(x), x @ W + layer.bias.data, rtol=1e-14)  # NumPy: the math itself


@pytest.mark.parametrize("kind", LAYERS)
def test_gradients_accumulate_across_two_backward_calls(kind, backend):
    rng = np.random.default_rng(0)
    layer = twin(make(kind, 4, 3, 0), lambda backend: LAYERS[kind](4, 3, backend=backend, dtype="float64"), backend)
    x, dout = rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 3))
    assert_grads_accumulate(layer, (x,), dout)
    layer.zero_grad()
    assert all(p.grad is None for p in layer.parameters())


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backend_equals_numpy(kind, dtype, device_backend):
    rng = np.random.default_rng(0)
    layer = make(kind, 4, 3, 0, dtype)
    other = twin(layer, lambda backend: LAYERS[kind](4, 3, backend=backend, dtype=dtype), device_backend)
    b = device_backend
    x, dout = rng.normal(size=(2, 5, 4)).astype(dtype), rng.normal(size=(2, 5, 3)).astype(dtype)
    out, dx = layer(x), layer.backward(dout)
    out_s = other(b.asarray(x))
    dx_s = other.backward(b.asarray(dout))
    assert is_on(out_s, b) and is_on(dx_s, b) and all(is_on(p.grad, b) for p in other.parameters())
    assert_close({"out": out_s, "x": dx_s, **param_grads(other)}, {"out": out, "x": dx, **param_grads(layer)},
                 twin_tol(b, dtype))


@pytest.mark.parametrize("kind", LAYERS)
def test_float32_stays_float32(kind, backend):
    rng = np.random.default_rng(0)
    layer = LAYERS[kind](4, 3, backend=backend)  # float32 is the default
    out = layer(backend.asarray(rng.normal(size=(2, 4)), "float32"))
    dx = layer.backward(backend.asarray(rng.normal(size=(2, 3)), "float32"))
    assert out.dtype == dx.dtype == backend.xp.float32
    assert all(p.data.dtype == p.grad.dtype == backend.xp.float32 for p in layer.parameters())


@pytest.mark.parametrize("kind", LAYERS)
def test_bad_input_names_argument_expected_and_received(kind, backend):
    layer = LAYERS[kind](4, 3, backend=backend, dtype="float64")
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 4\), got \(2, 5\)"):
        layer(backend.asarray(np.zeros((2, 5))))
    with pytest.raises(ValueError, match="x: expected dtype float64, got float32"):
        layer(backend.asarray(np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 4\), got \(\)"):
        layer(backend.asarray(np.ones(())))


@pytest.mark.parametrize("kind", LAYERS)
def test_bad_dout_names_argument_expected_and_received(kind, backend):
    """A transposed or broadcast dout would otherwise give silently wrong gradients; a float64 dout would make a
    float32 layer's gradients float64."""
    layer = LAYERS[kind](4, 3, backend=backend)
    for dout, match in [(np.ones((5, 2, 3), np.float32), r"dout: expected shape \(2, 5, 3\), got \(5, 2, 3\)"),
                        (np.ones((1, 5, 3), np.float32), r"dout: expected shape \(2, 5, 3\), got \(1, 5, 3\)"),
                        (np.ones((2, 5, 3)), "dout: expected dtype float32, got float64")]:
        layer(backend.asarray(np.ones((2, 5, 4), np.float32)))
        with pytest.raises(ValueError, match=match):
            layer.backward(backend.asarray(dout))


@pytest.mark.parametrize("kind", LAYERS)
def test_eval_mode_differentiates_and_no_grad_keeps_nothing(kind, backend):
    assert_grad_modes(lambda p: LAYERS[kind](4, 3, gen=Generator(0, backend), backend=backend, dtype="float64"),
                      backend.asarray(np.random.default_rng(1).normal(size=(2, 4))))


def test_init_scheme():
    layer = Conv1D(200, 300, std=0.02, dtype="float64")
    assert np.std(layer.weight.data) == pytest.approx(0.02, rel=0.02) and np.all(layer.bias.data == 0)
    assert Linear(3, 2).weight.data.dtype == np.float32
