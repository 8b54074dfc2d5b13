"""masked_mse, the masked cross-entropy and dt_loss: value and gradient against the original DT trainer's torch
expression and torch.nn.functional.cross_entropy (autograd) and against finite differences; hypothesis for padding
and shift invariance; zero gradient at padding, NaN-safe padding; float32; every backend."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import numerical_grad, rel_error, require
from minidt.backend import to_numpy
from minidt.losses import cross_entropy_backward, cross_entropy_forward, dt_loss, masked_mse


def left_padded_mask(rng: np.random.Generator, B: int, K: int) -> np.ndarray:
    """(B, K) of 0/1, each row 0...0 1...1 with at least one 1, as the K-segment sampler pads."""
    lengths = rng.integers(1, K + 1, size=B)
    return (np.arange(K)[None, :] >= K - lengths[:, None]).astype(np.float64)


def torch_masked_mse(torch, pred, target, mask):
    """The original DT trainer: keep the unmasked rows, then torch.mean. Returns (loss, dpred) by autograd."""
    d = pred.shape[-1]
    p = torch.tensor(pred, requires_grad=True)
    keep = torch.tensor(mask).reshape(-1) > 0
    a_hat, a = p.reshape(-1, d)[keep], torch.tensor(target).reshape(-1, d)[keep]
    loss = torch.mean((a_hat - a) ** 2)
    loss.backward()
    return loss.item(), p.grad.numpy()


def test_masked_mse_matches_torch_and_finite_differences(torch, backend):
    b, rng = backend, np.random.default_rng(0)
    B, K, d = 4, 6, 3
    pred, target = rng.normal(size=(B, K, d)), rng.normal(size=(B, K, d))
    mask = left_padded_mask(rng, B, K)
    loss, dpred = masked_mse(b.asarray(pred), b.asarray(target), b.asarray(mask))
    assert loss.shape == () and dpred.shape == (B, K, d)
    ref_loss, ref_dpred = torch_masked_mse(torch, pred, target, mask)
    assert rel_error(to_numpy(loss), ref_loss) <= 1e-10
    assert rel_error(to_numpy(dpred), ref_dpred) <= 1e-10

    def f():
        return float(to_numpy(masked_mse(b.asarray(pred), b.asarray(target), b.asarray(mask))[0]))

    assert rel_error(to_numpy(dpred), numerical_grad(f, pred)) <= 1e-7
    assert np.all(to_numpy(dpred)[mask == 0] == 0)


@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_masked_mse_matches_torch_any_shape(B, K, d, seed):
    torch = require("torch")
    rng = np.random.default_rng(seed)
    pred, target = rng.normal(size=(B, K, d)), rng.normal(size=(B, K, d))
    mask = left_padded_mask(rng, B, K)
    loss, dpred = masked_mse(pred, target, mask)
    ref_loss, ref_dpred = torch_masked_mse(torch, pred, target, mask)
    assert rel_error(loss, ref_loss) <= 1e-10 and rel_error(dpred, ref_dpred) <= 1e-10


def test_masked_mse_padding_is_ignored_even_if_nan(backend):
    b, rng = backend, np.random.default_rng(1)
    pred, target = rng.normal(size=(2, 5, 2)), rng.normal(size=(2, 5, 2))
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    loss, dpred = masked_mse(b.asarray(pred), b.asarray(target), b.asarray(mask))
    garbage = pred.copy()
    garbage[0, :2] = np.nan  # a padded query row of the model is garbage; here the worst kind
    loss2, dpred2 = masked_mse(b.asarray(garbage), b.asarray(target), b.asarray(mask))
    assert float(to_numpy(loss2)) == float(to_numpy(loss))
    np.testing.assert_array_equal(to_numpy(dpred2), to_numpy(dpred))
    assert np.all(to_numpy(dpred2)[0, :2] == 0)
    # bool, integer and float masks mean the same
    for m in (mask.astype(bool), mask.astype(np.float32)):
        np.testing.assert_array_equal(to_numpy(masked_mse(b.asarray(pred), b.asarray(target), b.asarray(m))[1]),
                                      to_numpy(dpred))


def test_float32_in_float32_out(backend):
    b, rng = backend, np.random.default_rng(2)
    pred, target = (b.asarray(rng.normal(size=(3, 4, 2)), dtype="float32") for _ in range(2))
    mask = b.asarray(left_padded_mask(rng, 3, 4), dtype="float32")
    loss, dpred = masked_mse(pred, target, mask)
    assert loss.dtype == dpred.dtype == b.xp.float32
    out = (b.asarray(rng.normal(size=(3, 4, 5)), dtype="float32"), pred, b.asarray(rng.normal(size=(3, 4, 1)),
                                                                                      dtype="float32"))
    states = b.asarray(rng.normal(size=(3, 4, 5)), dtype="float32")
    rtg = b.asarray(rng.normal(size=(3, 4, 1)), dtype="float32")
    loss, grads = dt_loss(out, states, target, rtg, mask, state_weight=0.5, return_weight=0.25)
    assert loss.dtype == b.xp.float32 and all(g.dtype == b.xp.float32 for g in grads)


def torch_dt_loss(torch, preds, states, actions, rtg, mask, ws, wr):
    """Action MSE over real steps, plus next-state and next-return MSEs over real (t, t+1) pairs, by autograd."""
    sp, ap, rp = (torch.tensor(x, requires_grad=True) for x in preds)
    m = torch.tensor(mask) > 0
    pairs = m[:, :-1] & m[:, 1:]
    loss = torch.mean((ap[m] - torch.tensor(actions)[m]) ** 2)
    loss = loss + ws * torch.mean((sp[:, :-1][pairs] - torch.tensor(states)[:, 1:][pairs]) ** 2)
    loss = loss + wr * torch.mean((rp[:, :-1][pairs] - torch.tensor(rtg)[:, 1:][pairs]) ** 2)
    loss.backward()
    return loss.item(), (sp.grad.numpy(), ap.grad.numpy(), rp.grad.numpy())


def test_dt_loss_matches_torch(torch, backend):
    b, rng = backend, np.random.default_rng(3)
    B, K, sd, ad = 3, 5, 4, 2
    preds = (rng.normal(size=(B, K, sd)), rng.normal(size=(B, K, ad)), rng.normal(size=(B, K, 1)))
    states, actions, rtg = rng.normal(size=(B, K, sd)), rng.normal(size=(B, K, ad)), rng.normal(size=(B, K, 1))
    mask = left_padded_mask(rng, B, K)
    mask[0] = [0, 0, 0, 0, 1]  # a single real step: no (t, t+1) pair in this row

    args = (tuple(b.asarray(x) for x in preds), b.asarray(states), b.asarray(actions), b.asarray(rtg),
            b.asarray(mask))
    loss, grads = dt_loss(*args, state_weight=0.5, return_weight=0.25)
    ref_loss, ref_grads = torch_dt_loss(torch, preds, states, actions, rtg, mask, 0.5, 0.25)
    assert rel_error(to_numpy(loss), ref_loss) <= 1e-10
    for g, ref in zip(grads, ref_grads):
        assert rel_error(to_numpy(g), ref) <= 1e-10

    # the default is the paper's: actions only, no gradient for the other heads
    loss, (ds, da, dr) = dt_loss(*args)
    ref_loss, ref_da = torch_masked_mse(torch, preds[1], actions, mask)
    assert ds is None and dr is None
    assert rel_error(to_numpy(loss), ref_loss) <= 1e-10 and rel_error(to_numpy(da), ref_da) <= 1e-10


def test_dt_loss_next_step_terms_need_two_steps():
    x = np.zeros((2, 1, 3))
    out = (x, x, np.zeros((2, 1, 1)))
    dt_loss(out, x, x, out[2], np.ones((2, 1)))  # actions alone are fine with K = 1
    with pytest.raises(ValueError, match="K >= 2"):
        dt_loss(out, x, x, out[2], np.ones((2, 1)), state_weight=1.0)


# --- cross-entropy (discrete actions) ----------------------------------------------------------------------------

def one_hot_targets(rng: np.random.Generator, B: int, K: int, A: int) -> tuple[np.ndarray, np.ndarray]:
    """ids (B, K) and their one-hot rows (B, K, A), float64."""
    ids = rng.integers(0, A, size=(B, K))
    return ids, np.eye(A)[ids]


def cross_entropy(logits, target, mask):
    """(loss, dlogits) through the forward/backward pair."""
    loss, cache = cross_entropy_forward(logits, target, mask)
    return loss, cross_entropy_backward(cache)


def torch_cross_entropy(torch, logits, ids, mask):
    """torch.nn.functional.cross_entropy over the real steps (its default reduction: the mean), by autograd."""
    z = torch.tensor(logits, requires_grad=True)
    keep = torch.tensor(mask) > 0
    loss = torch.nn.functional.cross_entropy(z[keep], torch.tensor(ids)[keep])
    loss.backward()
    return loss.item(), z.grad.numpy()


def test_cross_entropy_matches_torch_and_finite_differences(torch, backend):
    b, rng = backend, np.random.default_rng(4)
    B, K, A = 4, 6, 5
    logits = 3.0 * rng.normal(size=(B, K, A))
    ids, target = one_hot_targets(rng, B, K, A)
    mask = left_padded_mask(rng, B, K)
    loss, dlogits = cross_entropy(b.asarray(logits), b.asarray(target), b.asarray(mask))
    assert loss.shape == () and dlogits.shape == (B, K, A)
    ref_loss, ref_dlogits = torch_cross_entropy(torch, logits, ids, mask)
    assert rel_error(to_numpy(loss), ref_loss) <= 1e-12
    assert rel_error(to_numpy(dlogits), ref_dlogits) <= 1e-12

    def f():
        return float(to_numpy(cross_entropy_forward(b.asarray(logits), b.asarray(target), b.asarray(mask))[0]))

    assert rel_error(to_numpy(dlogits), numerical_grad(f, logits)) <= 1e-7
    assert np.all(to_numpy(dlogits)[mask == 0] == 0)
    # (softmax - one-hot) / N, written out
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    assert rel_error(to_numpy(dlogits), (p - target) * mask[..., None] / mask.sum()) <= 1e-12


@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 5), st.floats(0.1, 30.0), st.integers(0, 2**32 - 1))
def test_cross_entropy_matches_torch_any_shape_and_scale(B, K, A, scale, seed):
    """Any shape, logits of standard deviation up to 30 (float32's overflow without the row max: checked below)."""
    torch = require("torch")
    rng = np.random.default_rng(seed)
    logits = scale * rng.normal(size=(B, K, A))
    ids, target = one_hot_targets(rng, B, K, A)
    mask = left_padded_mask(rng, B, K)
    loss, dlogits = cross_entropy(logits, target, mask)
    ref_loss, ref_dlogits = torch_cross_entropy(torch, logits, ids, mask)
    assert rel_error(loss, ref_loss) <= 1e-10 and rel_error(dlogits, ref_dlogits) <= 1e-10


@given(st.integers(1, 4), st.integers(2, 6), st.integers(2, 5), st.integers(0, 2**32 - 1),
       st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -7.0]))
def test_cross_entropy_ignores_what_padding_holds(B, K, A, seed, junk):
    """Padded rows of the logits and of the target may hold anything (NaN, inf, huge, not one-hot): the loss and
    the gradient at real steps are the same to the bit, and the gradient at padding is exactly 0."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(B, K, A))
    _, target = one_hot_targets(rng, B, K, A)
    mask = left_padded_mask(rng, B, K)
    mask[0, 0] = 0  # at least one padded step
    pad = mask == 0
    loss, dlogits = cross_entropy(logits, target, mask)
    garbage_logits, garbage_target = logits.copy(), target.copy()
    garbage_logits[pad] = junk
    garbage_target[pad] = rng.normal(size=(int(pad.sum()), A)) * 100
    loss2, dlogits2 = cross_entropy(garbage_logits, garbage_target, mask)
    assert float(loss2) == float(loss)
    np.testing.assert_array_equal(dlogits2, dlogits)
    assert np.all(dlogits2[pad] == 0)


@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**32 - 1),
       st.floats(-1e3, 1e3))
def test_cross_entropy_is_shift_invariant_per_row(B, K, A, seed, c):
    """softmax(z + c) = softmax(z): a constant added to a row's logits (a different one per row) changes neither
    the loss nor its gradient (to round-off: the shifted logits are rounded)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(B, K, A))
    _, target = one_hot_targets(rng, B, K, A)
    mask = left_padded_mask(rng, B, K)
    shift = c * rng.uniform(-1, 1, size=(B, K, 1))
    loss, dlogits = cross_entropy(logits, target, mask)
    loss2, dlogits2 = cross_entropy(logits + shift, target, mask)
    assert abs(float(loss2) - float(loss)) <= 1e-12 * (1 + abs(c)) * (1 + float(loss))
    assert np.max(np.abs(dlogits2 - dlogits)) <= 1e-12 * (1 + abs(c))


def test_cross_entropy_float32_large_logits_and_bool_masks(backend):
    """float32 in, float32 out; logits of 1e4 (exp would overflow float32 without the row max subtracted) give
    finite values; bool, integer and float masks mean the same."""
    b, rng = backend, np.random.default_rng(5)
    logits = 1e4 * rng.normal(size=(3, 4, 3))
    ids, target = one_hot_targets(rng, 3, 4, 3)
    mask = left_padded_mask(rng, 3, 4)
    loss, dlogits = cross_entropy(*(b.asarray(x, dtype="float32") for x in (logits, target, mask)))
    assert loss.dtype == dlogits.dtype == b.xp.float32
    assert np.isfinite(to_numpy(loss)) and np.isfinite(to_numpy(dlogits)).all()
    ref = cross_entropy(logits, target, mask)
    assert rel_error(to_numpy(loss), ref[0]) <= 1e-5 and rel_error(to_numpy(dlogits), ref[1]) <= 1e-5
    for m in (mask.astype(bool), mask.astype(np.int64)):
        np.testing.assert_array_equal(to_numpy(cross_entropy(b.asarray(logits), b.asarray(target), b.asarray(m))[1]),
                                      to_numpy(cross_entropy(b.asarray(logits), b.asarray(target),
                                                             b.asarray(mask))[1]))


def test_dt_loss_discrete_is_the_cross_entropy_of_the_actions(torch, backend):
    b, rng = backend, np.random.default_rng(6)
    B, K, sd, A = 3, 5, 4, 3
    preds = (rng.normal(size=(B, K, sd)), rng.normal(size=(B, K, A)), rng.normal(size=(B, K, 1)))
    ids, actions = one_hot_targets(rng, B, K, A)
    states, rtg = rng.normal(size=(B, K, sd)), rng.normal(size=(B, K, 1))
    mask = left_padded_mask(rng, B, K)
    args = (tuple(b.asarray(x) for x in preds), b.asarray(states), b.asarray(actions), b.asarray(rtg),
            b.asarray(mask))
    loss, (ds, da, dr) = dt_loss(*args, discrete=True)
    ref_loss, ref_da = torch_cross_entropy(torch, preds[1], ids, mask)
    assert ds is None and dr is None
    assert rel_error(to_numpy(loss), ref_loss) <= 1e-12 and rel_error(to_numpy(da), ref_da) <= 1e-12
    loss, grads = dt_loss(*args, state_weight=0.5, discrete=True)  # the extra terms stay MSEs
    ref_state = 0.5 * to_numpy(masked_mse(b.asarray(preds[0][:, :-1]), b.asarray(states[:, 1:]),
                                          b.asarray(mask[:, :-1] * mask[:, 1:]))[0])
    assert rel_error(to_numpy(loss), ref_loss + ref_state) <= 1e-12
