"""layers/dropout.py: inverted dropout (survivors scaled by 1/(1-p)), mask kept for backward, seeded; the identity
in eval mode and at p = 0."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from layer_helpers import TORCH_TOL, assert_close, fd_check, is_on, seeds, torch_grads, twin_tol
import minidt
from minidt import to_numpy
from minidt.backend import Generator, dtype_name
from minidt.layers import Dropout
from minidt.layers.dropout import dropout_forward

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3)
probabilities = st.sampled_from([0.1, 0.5, 0.9])


def seeded(p: float, seed: int) -> tuple[Dropout, callable]:
    """A Dropout and a `run(x)` that draws the same mask on every call (a fixed function for finite differences)."""
    layer = Dropout(p, Generator(seed, "numpy"))
    state = layer.gen.get_state()

    def run(x):
        layer.gen.set_state(state)
        return layer(x)

    return layer, run


@given(shape=shapes, p=probabilities, seed=st.integers(**seeds))
def test_backward_matches_finite_differences(shape, p, seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.normal(size=shape), rng.normal(size=shape)
    layer, run = seeded(p, seed)
    assert fd_check(layer, lambda: run(x), dout, {"x": x}).keys() == {"x"}


@given(shape=shapes, p=probabilities, seed=st.integers(**seeds))
def test_forward_and_backward_follow_torch_semantics(torch, shape, p, seed):
    """The two libraries draw different masks; what they share is the rule: a dropped entry is 0 and its
    gradient 0, a kept one is x / (1-p) with gradient dout / (1-p). So each library's output and gradient, divided
    by its own keep pattern, must give the same x * scale and dout * scale."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)  # nonzero: 0 marks a drop
    dout = rng.normal(size=shape)
    layer = Dropout(p, Generator(seed))
    out = layer(x)
    dx = layer.backward(dout)
    keep = out != 0
    assert np.array_equal(dx != 0, keep & (dout != 0))

    torch.manual_seed(seed)
    xt = torch.tensor(x, requires_grad=True)
    out_t = torch.nn.functional.dropout(xt, p, training=True)
    dx_t = torch_grads(torch, out_t, dout, {"x": xt})["x"]
    keep_t = out_t.detach().numpy() != 0

    def scaled(values, kept, x_or_dout):  # fill the dropped entries with what a kept one would be
        return np.where(kept, values, 0.0) + np.where(kept, 0.0, x_or_dout / (1 - p))

    assert_close({"out": scaled(out, keep, x), "x": scaled(dx, keep, dout)},
                 {"out": scaled(out_t.detach().numpy(), keep_t, x), "x": scaled(dx_t, keep_t, dout)}, TORCH_TOL)
    # and the scale is 1 / (1 - p), exactly as torch computes it
    np.testing.assert_allclose(out[keep], x[keep] / (1 - p), rtol=1e-15)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_expected_value_is_preserved(p, backend):
    """E[dropout(x)] = x. Over N = 200_000 draws per entry the sample mean of out / x has standard deviation
    s = sqrt(p / ((1-p) N)) (0.0007 .. 0.0067); the tolerance 6 s fails by chance with probability 2e-9 for any
    seed, and catches the classic bugs: no rescaling (mean 1-p), scaling by 1-p (mean (1-p)^2), keeping with
    probability p (mean p / (1-p)). On every backend: cupy draws its masks on the GPU."""
    N = 200_000
    x = np.array([-2.0, 0.5, 3.0])
    out, mask = dropout_forward(backend.asarray(np.tile(x, (N, 1))), p, Generator(0, backend))
    out, mask = to_numpy(out), to_numpy(mask)
    s = np.sqrt(p / ((1 - p) * N))
    np.testing.assert_array_less(np.abs(np.mean(out, axis=0) / x - 1.0), 6 * s)
    kept = np.mean(mask != 0)  # the fraction kept is 1 - p, within 6 binomial standard deviations
    assert abs(kept - (1 - p)) <= 6 * np.sqrt(p * (1 - p) / (3 * N))
    assert set(np.unique(mask)) == {0.0, 1.0 / (1 - p)}


def test_identity_in_eval_mode_and_at_p_zero(backend):
    x = backend.asarray(np.random.default_rng(0).normal(size=(3, 4)))
    dout = backend.asarray(np.ones((3, 4)))
    layer = Dropout(0.5, Generator(0, backend))
    layer(x)
    layer.eval()
    assert layer(x) is x  # eval mode: the identity
    assert layer.backward(dout) is dout  # whose backward is the identity
    off = Dropout(0.0, Generator(0, backend))
    assert off(x) is x and off.backward(dout) is dout
    out, mask = dropout_forward(x, 0.0, Generator(0, backend))
    assert out is x and mask is None


def test_no_grad_keeps_no_mask_and_backward_explains(backend):
    layer = Dropout(0.5, Generator(0, backend))
    with minidt.no_grad():
        out = layer(backend.asarray(np.ones((3, 4))))
    assert layer.cache is None and np.any(to_numpy(out) == 0)  # training mode under no_grad: dropout still drops
    with pytest.raises(RuntimeError, match="Dropout.backward: no forward pass to differentiate.*no_grad"):
        layer.backward(backend.asarray(np.ones((3, 4))))


def test_mask_is_kept_for_backward_and_seeded(backend):
    x = backend.asarray(np.random.default_rng(0).normal(size=(50,)))
    a, b = Dropout(0.5, Generator(7, backend)), Dropout(0.5, Generator(7, backend))
    out_a, out_b = to_numpy(a(x)), to_numpy(b(x))
    np.testing.assert_array_equal(out_a, out_b)  # same seed, same mask
    assert not np.array_equal(to_numpy(a(x)), out_a)  # the next call draws a new mask...
    dx = to_numpy(b.backward(backend.asarray(np.ones(50))))
    np.testing.assert_array_equal(dx != 0, out_b != 0)  # ...backward uses the forward's


def test_generator_state_replays_the_masks(backend):
    """get_state / set_state (what a checkpoint keeps) replay the same masks: on cupy, the GPU generator's position
    too. get_state is plain data, for JSON."""
    import json

    gen = Generator(3, backend)
    gen.bernoulli((100,), 0.5)
    state = json.loads(json.dumps(gen.get_state()))
    first = to_numpy(gen.bernoulli((7, 9), 0.5))
    gen.bernoulli((5,), 0.5)
    gen.set_state(state)
    np.testing.assert_array_equal(to_numpy(gen.bernoulli((7, 9), 0.5)), first)
    resumed = Generator(99, backend)
    resumed.set_state(state)
    np.testing.assert_array_equal(to_numpy(resumed.bernoulli((7, 9), 0.5)), first)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_device_backend_masks_and_float32_stays_float32(dtype, device_backend):
    """strict takes NumPy's random bits and compares them on its device: NumPy's masks, so its output equals
    NumPy's. cupy draws its masks on the GPU (cuRAND): other masks, so what must agree is the rule, a kept entry
    is x / (1-p) with gradient dout / (1-p) and a dropped one is 0 with gradient 0."""
    b = device_backend
    rng = np.random.default_rng(0)
    x = (rng.uniform(0.5, 2.0, size=(2, 3, 4)) * rng.choice([-1.0, 1.0], size=(2, 3, 4))).astype(dtype)  # no 0s
    dout = rng.normal(size=(2, 3, 4)).astype(dtype)
    layer, other = Dropout(0.3, Generator(5, "numpy")), Dropout(0.3, Generator(5, b))
    out, dx = layer(x), layer.backward(dout)
    out_s = other(b.asarray(x))
    dx_s = other.backward(b.asarray(dout))
    assert is_on(out_s, b) and is_on(dx_s, b)
    assert out.dtype == dx.dtype == np.dtype(dtype) and dtype_name(out_s.dtype) == dtype_name(dx_s.dtype) == dtype
    if b.name != "cupy":
        assert_close({"out": out_s, "x": dx_s}, {"out": out, "x": dx}, twin_tol(b, dtype))
        return
    kept = to_numpy(out_s) != 0
    scale = np.asarray(1 / (1 - 0.3), dtype)
    np.testing.assert_allclose(to_numpy(out_s), np.where(kept, x * scale, 0), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(dx_s), np.where(kept, dout * scale, 0), rtol=1e-6)


def test_bad_dout_names_argument_expected_and_received(backend):
    layer = Dropout(0.5, Generator(0, backend))
    for dout, match in [(np.ones((1, 3), np.float32), r"dout: expected shape \(2, 3\), got \(1, 3\)"),
                        (np.ones((2, 3)), "dout: expected dtype float32, got float64")]:
        layer(backend.asarray(np.ones((2, 3), np.float32)))
        with pytest.raises(ValueError, match=match):
            layer.backward(backend.asarray(dout))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_bad_probability_names_argument_expected_and_received(p):
    with pytest.raises(ValueError, match=rf"p: expected a dropout probability in \[0, 1\), got {p}"):
        Dropout(p)
