"""layers/mlp.py: GPT-2's feed-forward network, c_fc -> activation -> c_proj -> dropout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from layer_helpers import (TORCH_TOL, assert_bad_dout_raises, assert_close, assert_grad_modes,
                           assert_grads_accumulate, copy_to_torch, fd_check, is_on, param_grads, randomize, seeds,
                           torch_grads, twin, twin_dropout, twin_tol)
from minidt.backend import Generator, dtype_name
from minidt.layers import MLP

NAMES = ["relu", "silu", "gelu", "gelu_new", "tanh"]
PARAMS = {"c_fc.weight", "c_fc.bias", "c_proj.weight", "c_proj.bias"}


@st.composite
def cases(draw, dropout: bool = True):
    return dict(B=draw(st.integers(1, 2)), T=draw(st.integers(1, 3)), C=draw(st.integers(1, 4)),
                n_inner=draw(st.integers(1, 6)), activation=draw(st.sampled_from(NAMES)),
                resid_pdrop=draw(st.sampled_from([0.0, 0.3])) if dropout else 0.0, seed=draw(st.integers(**seeds)))


def build(c: dict, dtype: str = "float64", backend="numpy") -> MLP:
    return MLP(c["C"], c["n_inner"], c["activation"], resid_pdrop=c["resid_pdrop"],
               gen=Generator(c["seed"], backend), backend=backend, dtype=dtype)


def data(c: dict, dtype: str = "float64"):
    rng = np.random.default_rng(c["seed"] + 1)
    shape = (c["B"], c["T"], c["C"])
    return rng.normal(size=shape).astype(dtype), rng.normal(size=shape).astype(dtype)


@given(cases())
def test_backward_matches_finite_differences(c):
    """Input and every parameter, every activation, with residual dropout (the same mask every call)."""
    mlp = randomize(build(c), np.random.default_rng(c["seed"]))
    x, dout = data(c)
    state = mlp.dropout.gen.get_state()

    def run():
        mlp.dropout.gen.set_state(state)
        return mlp(x)

    assert fd_check(mlp, run, dout, {"x": x}).keys() == PARAMS | {"x"}


@given(cases(dropout=False))
def test_forward_and_backward_match_gpt2_mlp(torch, c):
    """Against transformers' GPT2MLP with the same activation_function and our weights."""
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

    mlp = randomize(build(c), np.random.default_rng(c["seed"]))
    x, dout = data(c)
    out, dx = mlp(x), mlp.backward(dout)
    config = GPT2Config(n_embd=c["C"], n_head=1, n_inner=c["n_inner"], activation_function=c["activation"],
                        resid_pdrop=0.0)
    ref = GPT2MLP(c["n_inner"], config)
    copy_to_torch(torch, mlp, ref)
    xt = torch.tensor(x, requires_grad=True)
    out_t = ref(xt)
    theirs = torch_grads(torch, out_t, dout, {"x": xt, **dict(ref.named_parameters())})
    assert_close({"out": out, "x": dx, **param_grads(mlp)}, {"out": out_t.detach().numpy(), **theirs}, TORCH_TOL)


def test_acts_on_each_token_alone():
    """A position-wise network: changing one token changes only its own output and its own gradient."""
    c = dict(B=2, T=4, C=3, n_inner=5, activation="gelu", resid_pdrop=0.0, seed=0)
    mlp = randomize(build(c), np.random.default_rng(0))
    x, dout = data(c)
    y, dx = mlp(x), mlp.backward(dout)
    x2 = x.copy()
    x2[:, 2] += 1.0
    y2, dx2 = mlp(x2), mlp.backward(dout)
    others = [0, 1, 3]
    np.testing.assert_array_equal(y2[:, others], y[:, others])
    np.testing.assert_array_equal(dx2[:, others], dx[:, others])
    assert np.all(y2[:, 2] != y[:, 2])


def test_gradients_accumulate_across_two_backward_calls(backend):
    c = dict(B=2, T=3, C=4, n_inner=6, activation="gelu_new", resid_pdrop=0.0, seed=0)
    mlp = randomize(build(c, backend=backend), np.random.default_rng(0))
    x, dout = data(c)
    assert_grads_accumulate(mlp, (x,), dout)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_backend_equals_numpy_and_float32_stays_float32(dtype, activation, device_backend):
    b = device_backend
    c = dict(B=2, T=3, C=4, n_inner=6, activation=activation, resid_pdrop=twin_dropout(b, 0.3), seed=0)
    mlp = randomize(build(c, dtype), np.random.default_rng(0))
    other = twin(mlp, lambda backend: build(c, dtype, backend), b)
    x, dout = data(c, dtype)
    out, dx = mlp(x), mlp.backward(dout)
    out_s = other(b.asarray(x))
    dx_s = other.backward(b.asarray(dout))
    outs = {"out": out_s, "x": dx_s, **param_grads(other)}
    assert all(is_on(a, b) and dtype_name(a.dtype) == dtype for a in outs.values())
    assert all(a.dtype == np.dtype(dtype) for a in (out, dx, *param_grads(mlp).values()))
    assert_close(outs, {"out": out, "x": dx, **param_grads(mlp)}, twin_tol(b, dtype))


def test_bad_input_names_argument_expected_and_received(backend):
    mlp = MLP(4, 8, "gelu", backend=backend)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 4\), got \(2, 3, 5\)"):
        mlp(backend.asarray(np.zeros((2, 3, 5), np.float32)))
    with pytest.raises(ValueError, match="x: expected dtype float32, got float64"):
        mlp(backend.asarray(np.zeros((2, 3, 4))))
    with pytest.raises(ValueError, match=r"activation_function: expected one of relu, silu, gelu, gelu_new, tanh, "
                                         r"got 'swish'"):
        MLP(4, 8, "swish", backend=backend)


@pytest.mark.parametrize("resid_pdrop", [0.0, 0.5])
def test_bad_dout_names_argument_expected_and_received(resid_pdrop, backend):
    assert_bad_dout_raises(MLP(4, 8, "gelu", resid_pdrop=resid_pdrop, backend=backend), (2, 5, 4))


def test_eval_mode_differentiates_and_no_grad_keeps_nothing(backend):
    assert_grad_modes(lambda p: MLP(4, 8, "relu", resid_pdrop=p, gen=Generator(0, backend), backend=backend,
                                    dtype="float64"),
                      backend.asarray(np.random.default_rng(1).normal(size=(2, 3, 4))))
