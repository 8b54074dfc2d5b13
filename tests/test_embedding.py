"""layers/embedding.py: a table lookup forward; a scatter-add backward that sums the gradients of repeated ids."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import rel_error
from layer_helpers import (TORCH_TOL, assert_close, assert_grads_accumulate, fd_check, is_on, randomize, seeds,
                           torch_grads, twin, twin_tol)
import minidt
from minidt import to_numpy
from minidt.backend import Generator, dtype_name
from minidt.layers import Embedding


@st.composite
def lookups(draw):
    """(V, C, ids): ids of 0..2 dimensions, repeats likely (V is small)."""
    V, C = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=2)))
    ids = np.array(draw(st.lists(st.integers(0, V - 1), min_size=int(np.prod(shape)),
                                 max_size=int(np.prod(shape))))).reshape(shape)
    return V, C, ids


def make(V: int, C: int, seed: int, dtype: str = "float64", backend: str = "numpy") -> Embedding:
    return randomize(Embedding(V, C, dtype=dtype, backend=backend), np.random.default_rng(seed))


@given(lookups(), st.integers(**seeds))
def test_backward_matches_finite_differences(lookup, seed):
    V, C, ids = lookup
    emb = make(V, C, seed)
    dout = np.random.default_rng(seed).normal(size=(*ids.shape, C))
    assert fd_check(emb, lambda: emb(ids), dout).keys() == {"weight"}


@given(lookups(), st.integers(**seeds))
def test_forward_and_backward_match_torch(torch, lookup, seed):
    V, C, ids = lookup
    emb = make(V, C, seed)
    dout = np.random.default_rng(seed).normal(size=(*ids.shape, C))
    out = emb(ids)
    assert emb.backward(dout) is None  # integer ids have no gradient
    w = torch.tensor(emb.weight.data, requires_grad=True)
    out_t = torch.nn.functional.embedding(torch.from_numpy(ids), w)
    theirs = torch_grads(torch, out_t, dout, {"weight": w})
    assert_close({"out": out, "weight": emb.weight.grad}, {"out": out_t.detach().numpy(), **theirs}, TORCH_TOL)


def test_repeated_ids_sum_and_unused_rows_get_zero(backend):
    emb = make(5, 2, 0, backend=backend)
    ids = np.array([[3, 1, 3], [3, 0, 1]])
    dout = np.arange(12.0).reshape(2, 3, 2)
    emb(ids)
    emb.backward(backend.asarray(dout))
    expected = np.zeros((5, 2))
    expected[3] = dout[0, 0] + dout[0, 2] + dout[1, 0]
    expected[1] = dout[0, 1] + dout[1, 2]
    expected[0] = dout[1, 1]
    np.testing.assert_array_equal(to_numpy(emb.weight.grad), expected)  # row 2 and 4 never looked up: zero


def test_one_id_for_every_token_is_a_row_and_a_plain_sum(backend):
    """An int id (GPT-2's position 0 in the Decision Transformer): forward gives that row, for the caller to
    broadcast; backward adds the sum of dout over every token into that row, and nothing elsewhere. The same as
    the array of that id everywhere."""
    emb, same = make(4, 3, 0, backend=backend), make(4, 3, 0, backend=backend)
    dout = np.random.default_rng(1).normal(size=(2, 5, 3))
    row = emb(2)
    assert tuple(row.shape) == (3,) and is_on(row, backend)
    emb.backward(backend.asarray(dout))
    full = same(np.full((2, 5), 2))
    same.backward(backend.asarray(dout))
    np.testing.assert_array_equal(to_numpy(full), np.broadcast_to(to_numpy(row), (2, 5, 3)))
    assert rel_error(to_numpy(emb.weight.grad), to_numpy(same.weight.grad)) <= 1e-15
    assert np.all(to_numpy(emb.weight.grad)[[0, 1, 3]] == 0)
    with pytest.raises(ValueError, match=r"ids: expected values in \[0, 3\], got 4"):
        emb(4)


def test_backward_is_the_same_on_every_run(backend):
    """No atomic adds: the same ids and gradients give the same bits (a resumed run continues bit for bit)."""
    rng = np.random.default_rng(2)
    ids, dout = rng.integers(0, 3, size=(8, 40)), backend.asarray(rng.normal(size=(8, 40, 16)), "float32")
    grads = []
    for _ in range(2):
        emb = make(3, 16, 0, "float32", backend)
        emb(ids)
        emb.backward(dout)
        grads.append(to_numpy(emb.weight.grad))
    np.testing.assert_array_equal(grads[0], grads[1])


def test_gradients_accumulate_across_two_backward_calls(backend):
    emb = make(4, 3, 0, backend=backend)
    ids = np.array([[0, 2, 2, 1]])
    dout = np.random.default_rng(0).normal(size=(1, 4, 3))
    assert_grads_accumulate(emb, (ids,), dout)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backend_equals_numpy(dtype, device_backend):
    b = device_backend
    emb = make(6, 3, 0, dtype)
    other = twin(emb, lambda backend: Embedding(6, 3, backend=backend, dtype=dtype), b)
    ids = np.array([[5, 0, 5], [2, 2, 2]])
    dout = np.random.default_rng(1).normal(size=(2, 3, 3)).astype(dtype)
    out = emb(ids)
    emb.backward(dout)
    out_s = other(b.asarray(ids))  # ids already on the device
    other.backward(b.asarray(dout))
    assert is_on(out_s, b) and is_on(other.weight.grad, b)
    assert dtype_name(out_s.dtype) == dtype_name(other.weight.grad.dtype) == dtype
    assert_close({"out": out_s, "weight": other.weight.grad}, {"out": out, "weight": emb.weight.grad},
                 twin_tol(b, dtype))
    np.testing.assert_array_equal(to_numpy(other(ids)), out)  # host ids: checked, then moved


def test_float32_stays_float32(backend):
    emb = Embedding(5, 3, backend=backend)
    out = emb(np.array([1, 1, 4]))
    emb.backward(backend.asarray(np.ones((3, 3), np.float32)))
    assert out.dtype == emb.weight.grad.dtype == backend.xp.float32


def test_bad_input_names_argument_expected_and_received(backend):
    """Host ids are checked before they are moved; on NumPy, every id is a host id."""
    emb = Embedding(5, 3, backend=backend)
    with pytest.raises(ValueError, match="ids: expected an integer array, got dtype float64"):
        emb(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"ids: expected values in \[0, 4\], got values in \[1, 5\]"):
        emb(np.array([1, 5]))
    with pytest.raises(ValueError, match=r"ids: expected values in \[0, 4\], got values in \[-1, 2\]"):
        emb([-1, 2])  # a negative index must not wrap around to the last row
    with pytest.raises(ValueError, match=r"ids: expected values in \[0, 4\], got -1"):
        emb(-1)


def test_bad_dout_names_argument_expected_and_received(backend):
    emb = Embedding(5, 3, backend=backend)
    for dout, match in [(np.ones((2, 3, 2), np.float32), r"dout: expected shape \(\.\.\., 3\), got \(2, 3, 2\)"),
                        (np.ones((1, 3, 3), np.float32), r"dout: expected shape \(\.\.\., 3\) with one row per id "
                                                         r"\(6 ids\), got \(1, 3, 3\)"),
                        (np.ones((2, 3, 3)), "dout: expected dtype float32, got float64")]:
        emb(np.zeros((2, 3), np.int64))
        with pytest.raises(ValueError, match=match):
            emb.backward(backend.asarray(dout))


def test_eval_mode_differentiates_and_no_grad_keeps_nothing(backend):
    emb = Embedding(5, 3, gen=Generator(0, backend), backend=backend).eval()
    emb.backward(emb(np.array([1, 2, 1])))
    grad, weight = to_numpy(emb.weight.grad), to_numpy(emb.weight.data)
    np.testing.assert_array_equal(grad[1], 2 * weight[1])  # eval mode still differentiates
    with minidt.no_grad():
        emb(np.array([1, 2]))
    assert emb.cache is None
    with pytest.raises(RuntimeError, match="Embedding.backward: no forward pass to differentiate.*no_grad"):
        emb.backward(backend.asarray(np.ones((2, 3), np.float32)))
