"""layers/attention.py: softmax, the additive attention bias, scaled dot-product attention, and GPT-2's
CausalSelfAttention with every flag (scale_attn_weights, scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn,
attention dropout, returned weights, past_kv / use_cache).

The reference's GPT2Attention (transformers 5.x, eager) applies no causal mask of its own: GPT2Model builds one 4-D
additive mask with `masking_utils.create_causal_mask` (0 = attend, the dtype's min = future or padded key) and every
block adds it to the scores. So the reference gets either exactly our additive bias, or the mask
create_causal_mask builds from the same (B, T) attention_mask, which differs from ours only in fully masked query
rows (finite garbage on both sides, compared nowhere)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from conftest import rel_error
from layer_helpers import (TORCH_TOL, assert_bad_dout_raises, assert_causal, assert_close, assert_grad_modes,
                           assert_grads_accumulate, assert_left_padding_invariant, copy_to_torch, fd_check, fd_errors,
                           fully_masked, is_on, make_mask, param_grads, past_kv_pass, randomize, reference_mask, seeds,
                           torch_grads, twin, twin_dropout, twin_tol)
from minidt import to_numpy
from minidt.backend import Generator, dtype_name
from minidt.layers import CausalSelfAttention
from minidt.layers.attention import (attention_backward, attention_bias, attention_forward, softmax_backward,
                                     softmax_forward)

# --- helpers ---------------------------------------------------------------------------------------------------


@st.composite
def cases(draw, dropout: bool = True, mask_kinds=(None, "left", "random")):
    H, D = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    flags = dict(scale_attn_weights=draw(st.booleans()), scale_attn_by_inverse_layer_idx=draw(st.booleans()),
                 layer_idx=draw(st.integers(0, 3)))
    if dropout:
        flags.update(attn_pdrop=draw(st.sampled_from([0.0, 0.3])), resid_pdrop=draw(st.sampled_from([0.0, 0.3])))
    return dict(B=draw(st.integers(1, 2)), T=draw(st.integers(1, 4)), H=H, C=H * D, flags=flags,
                mask_kind=draw(st.sampled_from(mask_kinds)), seed=draw(st.integers(**seeds)))


def build(case: dict, dtype: str = "float64", backend="numpy", **over) -> CausalSelfAttention:
    return CausalSelfAttention(case["C"], case["H"], gen=Generator(case["seed"], backend), backend=backend,
                               dtype=dtype, **{**case["flags"], **over})


def data(case: dict, dtype: str = "float64"):
    """x (B, T, C), mask (B, T) or None, dout (B, T, C) zero on fully masked query rows."""
    rng = np.random.default_rng(case["seed"] + 1)
    B, T, C = case["B"], case["T"], case["C"]
    x = rng.normal(size=(B, T, C)).astype(dtype)
    mask = make_mask(rng, B, T, case["mask_kind"])
    dout = (rng.normal(size=(B, T, C)) * ~fully_masked(mask, B, T, T)[..., None]).astype(dtype)
    return x, mask, dout


def seeded_run(layer: CausalSelfAttention, *args, **kwargs):
    """run() -> y, drawing the same dropout masks on every call (a fixed function for finite differences)."""
    state = layer.gen.get_state()

    def run():
        layer.gen.set_state(state)
        return layer(*args, **kwargs)[0]

    return run


def reference(torch, layer: CausalSelfAttention, case: dict, dtype: str = "float64", upcast: bool = False):
    """transformers' GPT2Attention (eager), same flags, our weights, dropout off."""
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

    config = GPT2Config(n_embd=case["C"], n_head=case["H"], attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0,
                        scale_attn_weights=case["flags"]["scale_attn_weights"],
                        scale_attn_by_inverse_layer_idx=case["flags"]["scale_attn_by_inverse_layer_idx"],
                        reorder_and_upcast_attn=upcast)
    config._attn_implementation = "eager"
    ref = GPT2Attention(config, layer_idx=case["flags"]["layer_idx"]).to(getattr(torch, dtype))
    copy_to_torch(torch, layer, ref)
    return ref


# --- softmax -----------------------------------------------------------------------------------------------------

rows = st.tuples(st.lists(st.integers(1, 3), min_size=0, max_size=2), st.integers(1, 6))


@given(rows, st.integers(**seeds), st.sampled_from([0.1, 1.0, 10.0]))
@example(([], 2), 2882, 10.0)  # saturated: every difference rounds to 0 while dx is 4e-13 (once 4e287 "relative")
def test_softmax_backward_matches_finite_differences(shape, seed, scale):
    lead, n = shape
    rng = np.random.default_rng(seed)
    x, dout = scale * rng.normal(size=(*lead, n)), rng.normal(size=(*lead, n))
    y = softmax_forward(x)
    dx = softmax_backward(dout, y)
    fd_errors(lambda: float(np.sum(softmax_forward(x) * dout)), {"x": (dx, x)}, float(np.sum(np.abs(y * dout))))


@given(rows, st.integers(**seeds), st.sampled_from([0.1, 1.0, 10.0]))
def test_softmax_matches_torch(torch, shape, seed, scale):
    """In a saturated row (y_1 = 1 - d) dx is O(d) but computed by cancelling O(1) terms in both libraries, so
    their difference is round-off, ~eps |dout|. Examples where every row is saturated (max |dx| < 1e-4 |dout|)
    are rejected: there the relative difference of two round-off results means nothing."""
    lead, n = shape
    rng = np.random.default_rng(seed)
    x, dout = scale * rng.normal(size=(*lead, n)), rng.normal(size=(*lead, n))
    out = softmax_forward(x)
    xt = torch.tensor(x, requires_grad=True)
    out_t = torch.nn.functional.softmax(xt, dim=-1)
    theirs = torch_grads(torch, out_t, dout, {"x": xt})
    assume(not 0.0 < np.max(np.abs(theirs["x"])) < 1e-4 * np.max(np.abs(dout)))
    assert_close({"out": out, "x": softmax_backward(dout, out)}, {"out": out_t.detach().numpy(), **theirs}, TORCH_TOL)


@given(rows, st.integers(**seeds), st.sampled_from([1.0, 1e3, 1e300]))
def test_softmax_rows_sum_to_one(shape, seed, scale):
    """Without overflow for huge logits (the row max is subtracted), and -inf entries get exactly 0."""
    lead, n = shape
    rng = np.random.default_rng(seed)
    x = scale * rng.uniform(-1, 1, size=(*lead, n))
    x[..., 1:][rng.random((*lead, n - 1)) < 0.3] = -np.inf  # entry 0 of each row stays finite
    y = softmax_forward(x)
    assert np.all(np.isfinite(y)) and np.all(y >= 0)
    np.testing.assert_allclose(np.sum(y, axis=-1), 1.0, rtol=0, atol=8 * n * np.finfo(np.float64).eps)
    assert np.all(y[np.isneginf(x)] == 0.0)


def test_softmax_backend_equals_numpy_and_float32(device_backend):
    b = device_backend
    x = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32)
    y, y_s = softmax_forward(x), softmax_forward(b.asarray(x))
    dx, dx_s = softmax_backward(x, y), softmax_backward(b.asarray(x), y_s)
    assert is_on(y_s, b) and is_on(dx_s, b) and y.dtype == dx.dtype == np.float32
    assert dtype_name(y_s.dtype) == dtype_name(dx_s.dtype) == "float32"
    assert_close({"y": y_s, "dx": dx_s}, {"y": y, "dx": dx}, twin_tol(b, "float32"))


# --- attention_bias ------------------------------------------------------------------------------------------------


def test_attention_bias_values():
    mask = np.array([[0, 1, 1], [1, 1, 1.0]])
    bias = attention_bias(mask, 3, 3, np.float64, np.zeros(1))
    lo, inf = np.finfo(np.float64).min, np.inf
    expected_row0 = [[lo, -inf, -inf], [lo, 0, -inf], [lo, 0, 0]]  # key 0 padded: finfo.min, future: -inf
    expected_row1 = [[0, -inf, -inf], [0, 0, -inf], [0, 0, 0]]
    assert bias.shape == (2, 1, 3, 3)
    np.testing.assert_array_equal(bias[:, 0], [expected_row0, expected_row1])
    np.testing.assert_array_equal(attention_bias(None, 3, 3, np.float64, np.zeros(1))[0, 0], expected_row1)
    assert attention_bias(mask, 3, 3, np.float32, np.zeros(1)).dtype == np.float32


@given(st.integers(1, 3), st.integers(1, 5), st.integers(**seeds), st.sampled_from(["left", "random"]))
def test_attention_bias_with_a_cache_is_the_last_rows_of_the_full_one(B, Tk, seed, kind):
    mask = make_mask(np.random.default_rng(seed), B, Tk, kind)
    full = attention_bias(mask, Tk, Tk, np.float64, np.zeros(1))
    for Tq in range(1, Tk + 1):
        np.testing.assert_array_equal(attention_bias(mask, Tq, Tk, np.float64, np.zeros(1)), full[:, :, Tk - Tq:])


@given(st.integers(1, 3), st.integers(1, 5), st.integers(**seeds), st.sampled_from([None, "left", "random"]))
def test_attention_bias_masks_what_the_reference_masks(torch, B, T, seed, kind):
    """Same zeros as create_causal_mask; where the reference masks, we add -inf (future) or finfo.min (padded
    past key: the reference's own number)."""
    mask = make_mask(np.random.default_rng(seed), B, T, kind)
    ours = np.broadcast_to(attention_bias(mask, T, T, np.float64, np.zeros(1)), (B, 1, T, T))
    theirs = reference_mask(torch, torch.zeros(B, T, 2), mask).numpy()
    np.testing.assert_array_equal(ours == 0, theirs == 0)
    past = np.tril(np.ones((T, T), bool))
    np.testing.assert_array_equal(ours[..., past], theirs[..., past])
    assert np.all(np.isneginf(ours[..., ~past]))


# --- attention_forward / attention_backward --------------------------------------------------------------------


@st.composite
def qkv_cases(draw):
    B, H, D = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    Tk = draw(st.integers(1, 4))
    Tq = draw(st.integers(1, Tk))
    return dict(B=B, H=H, D=D, Tq=Tq, Tk=Tk, mask_kind=draw(st.sampled_from([None, "left", "random"])),
                scale=draw(st.sampled_from([1.0, 0.5, 0.125])), p=draw(st.sampled_from([0.0, 0.3])),
                seed=draw(st.integers(**seeds)))


def qkv_data(c: dict):
    rng = np.random.default_rng(c["seed"])
    B, H, D, Tq, Tk = c["B"], c["H"], c["D"], c["Tq"], c["Tk"]
    q, k, v = rng.normal(size=(B, H, Tq, D)), rng.normal(size=(B, H, Tk, D)), rng.normal(size=(B, H, Tk, D))
    mask = make_mask(rng, B, Tk, c["mask_kind"])
    bias = attention_bias(mask, Tq, Tk, np.float64, q)
    dout = rng.normal(size=(B, H, Tq, D)) * ~fully_masked(mask, B, Tq, Tk)[:, None, :, None]
    return q, k, v, bias, dout


@given(qkv_cases())
def test_attention_backward_matches_finite_differences(c):
    """dq, dk, dv, with keys from a cache (Tk >= Tq), padding and attention dropout (the same mask every call)."""
    q, k, v, bias, dout = qkv_data(c)
    gen = Generator(c["seed"])
    state = gen.get_state()

    def run():
        gen.set_state(state)
        return attention_forward(q, k, v, bias, c["scale"], c["p"], gen)

    out, probs, cache = run()
    dq, dk, dv = attention_backward(dout, cache)
    fd_errors(lambda: float(np.sum(run()[0] * dout)), {"q": (dq, q), "k": (dk, k), "v": (dv, v)},
              float(np.sum(np.abs(out * dout))))


@given(qkv_cases())
def test_attention_matches_the_references_eager_attention(torch, c):
    """Against transformers' own eager_attention_forward (the function GPT2Attention calls), same bias, every row."""
    from transformers.models.gpt2.modeling_gpt2 import eager_attention_forward

    c["p"] = 0.0  # the two libraries cannot draw the same dropout masks
    q, k, v, bias, _ = qkv_data(c)
    dout = np.random.default_rng(c["seed"] + 1).normal(size=q.shape)  # every row, fully masked ones too
    out, probs, cache = attention_forward(q, k, v, bias, c["scale"], 0.0, None)
    dq, dk, dv = attention_backward(dout, cache)
    t = {n: torch.tensor(a, requires_grad=True) for n, a in (("q", q), ("k", k), ("v", v))}
    module = torch.nn.Module().eval()
    out_t, probs_t = eager_attention_forward(module, t["q"], t["k"], t["v"], torch.from_numpy(bias),
                                             scaling=c["scale"], dropout=0.0)
    out_t = out_t.transpose(1, 2)  # it returns (B, T, H, D), ready for merging heads
    theirs = torch_grads(torch, out_t, dout, t)
    assert_close({"out": out, "probs": probs, "q": dq, "k": dk, "v": dv},
                 {"out": out_t.detach().numpy(), "probs": probs_t.detach().numpy(), **theirs}, TORCH_TOL)


# --- CausalSelfAttention ---------------------------------------------------------------------------------------


@given(cases())
def test_module_backward_matches_finite_differences(case):
    """Input and every parameter, over all flags, padding, attention and residual dropout."""
    layer = randomize(build(case), np.random.default_rng(case["seed"]))
    x, mask, dout = data(case)
    errors = fd_check(layer, seeded_run(layer, x, mask), dout, {"x": x})
    assert errors.keys() == {"x", "c_attn.weight", "c_attn.bias", "c_proj.weight", "c_proj.bias"}


@settings(max_examples=15)
@given(cases(), st.integers(1, 3))
def test_module_backward_with_past_kv_matches_finite_differences(case, T_new):
    """Keys and values from an earlier call are constants: the gradient of the new tokens and of every
    parameter, through the new tokens only."""
    layer = randomize(build(case), np.random.default_rng(case["seed"]))
    x_past, mask, _ = data(case)
    B, T, C = x_past.shape
    rng = np.random.default_rng(case["seed"] + 2)
    x = rng.normal(size=(B, T_new, C))
    full_mask = None if mask is None else np.concatenate([mask, np.ones((B, T_new))], axis=1)
    _, _, past = layer(x_past, mask, use_cache=True)
    dout = rng.normal(size=(B, T_new, C))
    fd_check(layer, seeded_run(layer, x, full_mask, past_kv=past), dout, {"x": x})


@given(cases(dropout=False))
def test_module_matches_gpt2_attention_fed_the_same_bias(torch, case):
    """Every row (fully masked ones too), the returned weights, dx and every parameter gradient."""
    layer = randomize(build(case), np.random.default_rng(case["seed"]))
    x, mask, _ = data(case)
    dout = np.random.default_rng(case["seed"] + 3).normal(size=x.shape)
    bias = attention_bias(mask, x.shape[1], x.shape[1], np.float64, x)
    y, probs, _ = layer(x, bias=bias)
    dx = layer.backward(dout)
    ref = reference(torch, layer, case)
    xt = torch.tensor(x, requires_grad=True)
    y_t, probs_t = ref(xt, attention_mask=torch.from_numpy(bias), output_attentions=True)
    theirs = torch_grads(torch, y_t, dout, {"x": xt, **dict(ref.named_parameters())})
    assert_close({"y": y, "probs": probs, "x": dx, **param_grads(layer)},
                 {"y": y_t.detach().numpy(), "probs": probs_t.detach().numpy(), **theirs}, TORCH_TOL)


@given(cases(dropout=False))
def test_module_matches_gpt2_attention_with_its_own_mask(torch, case):
    """minidt builds its bias from the (B, T) attention_mask, the reference gets create_causal_mask's; outputs and
    weights compared on every query row that sees a real key, gradients for a dout that is zero on the others."""
    layer = randomize(build(case), np.random.default_rng(case["seed"]))
    x, mask, dout = data(case)
    B, T, _ = x.shape
    keep = ~fully_masked(mask, B, T, T)
    y, probs, _ = layer(x, mask)
    dx = layer.backward(dout)
    ref = reference(torch, layer, case)
    xt = torch.tensor(x, requires_grad=True)
    y_t, probs_t = ref(xt, attention_mask=reference_mask(torch, xt, mask), output_attentions=True)
    theirs = torch_grads(torch, y_t, dout, {"x": xt, **dict(ref.named_parameters())})
    rows = np.broadcast_to(keep[:, None, :], probs.shape[:3])
    assert_close({"y": y[keep], "probs": probs[rows], "x": dx, **param_grads(layer)},
                 {"y": y_t.detach().numpy()[keep], "probs": probs_t.detach().numpy()[rows], **theirs}, TORCH_TOL)


UPCAST_TOL = 1e-5  # scores and softmax in float32 on both sides: float32 round-off (eps 1.2e-7), summed apart


@settings(max_examples=10)
@given(cases(dropout=False, mask_kinds=("left",)), st.sampled_from(["float32", "float64"]))
def test_reorder_and_upcast_attn_matches_the_reference(torch, case, dtype):
    """The flag computes scores and softmax in float32 whatever the dtype, in both libraries, so they agree to
    float32 round-off, not to float64's 1e-10. (The reference raises in float64 when its mask is float64, the
    float32 scores then being promoted; it gets the float32 mask minidt also uses.)"""
    layer = randomize(build(case, dtype, reorder_and_upcast_attn=True), np.random.default_rng(case["seed"]))
    x, mask, dout = data(case, dtype)
    B, T, _ = x.shape
    keep = ~fully_masked(mask, B, T, T)
    bias = attention_bias(mask, T, T, np.float32, x)
    assert bias.dtype == np.float32
    y, probs, _ = layer(x, bias=bias)
    dx = layer.backward(dout)
    assert y.dtype == probs.dtype == dx.dtype == np.dtype(dtype)
    ref = reference(torch, layer, case, dtype, upcast=True)
    xt = torch.tensor(x, requires_grad=True)
    y_t, probs_t = ref(xt, attention_mask=torch.from_numpy(bias), output_attentions=True)
    theirs = torch_grads(torch, y_t, dout, {"x": xt, **dict(ref.named_parameters())})
    assert_close({"y": y[keep], "probs": probs, "x": dx, **param_grads(layer)},
                 {"y": y_t.detach().numpy()[keep], "probs": probs_t.detach().numpy(), **theirs}, UPCAST_TOL)


def test_reorder_and_upcast_attn_really_computes_scores_in_float32():
    """In a float64 layer the flag's result is float32 round-off (not float64 round-off, not more) away from the
    plain float64 attention, and its weights come back in float64 as the reference's do."""
    case = causal_case()
    plain = randomize(build(case), np.random.default_rng(0))
    upcast = build(case, reorder_and_upcast_attn=True)
    for p, q in zip(upcast.parameters(), plain.parameters()):
        p.data = q.data
    x, _, _ = data(case)
    (y, probs, _), (y32, probs32, _) = plain(x), upcast(x)
    assert probs32.dtype == y32.dtype == np.float64
    assert 1e-12 < rel_error(probs32, probs) <= UPCAST_TOL and 1e-12 < rel_error(y32, y) <= UPCAST_TOL


@given(cases(dropout=False))
def test_scale_is_the_references(case):
    """1/sqrt(D) with scale_attn_weights, further divided by layer_idx + 1 with scale_attn_by_inverse_layer_idx."""
    layer = build(case)
    D = case["C"] // case["H"]
    f = case["flags"]
    expected = (D ** -0.5 if f["scale_attn_weights"] else 1.0) / (
        f["layer_idx"] + 1 if f["scale_attn_by_inverse_layer_idx"] else 1)
    assert layer.scale == pytest.approx(expected, rel=1e-15)


def test_returned_weights_are_after_attention_dropout():
    """As the reference's: softmax rows summing to 1 without dropout; with it, each entry 0 or kept / (1 - p)."""
    case = dict(B=2, T=5, H=2, C=4, seed=0, mask_kind="left",
                flags=dict(scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False, layer_idx=0))
    x, mask, _ = data(case)
    plain = randomize(build(case), np.random.default_rng(0))
    _, probs, _ = plain(x, mask)
    assert probs.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(np.sum(probs, axis=-1), 1.0, rtol=1e-14)
    dropped = build(case, attn_pdrop=0.5)
    for p, q in zip(dropped.parameters(), plain.parameters()):
        p.data = q.data
    _, probs_d, _ = dropped(x, mask)
    kept = probs_d != 0
    assert 0 < np.mean(kept) < 1
    np.testing.assert_allclose(probs_d[kept], probs[kept] / 0.5, rtol=1e-14)


@settings(max_examples=15)
@given(cases(dropout=False, mask_kinds=(None, "left")), st.data())
def test_past_kv_decoding_equals_the_full_pass(case, draw):
    """Feeding the tokens in chunks with use_cache gives the full pass's outputs, weights and keys/values."""
    layer = randomize(build(case), np.random.default_rng(case["seed"])).eval()
    rng = np.random.default_rng(case["seed"])
    B, T, C = case["B"], case["T"] + 2, case["C"]
    x = rng.normal(size=(B, T, C))
    mask = make_mask(rng, B, T, case["mask_kind"])
    y_full, probs_full, (k_full, v_full) = layer(x, mask, use_cache=True)
    cuts = sorted(draw.draw(st.sets(st.integers(1, T - 1), max_size=3)))
    past, ys = None, []
    for t0, t1 in zip([0, *cuts], [*cuts, T]):
        y, probs, past = layer(x[:, t0:t1], None if mask is None else mask[:, :t1], past_kv=past, use_cache=True)
        assert probs.shape == (B, case["H"], t1 - t0, t1)
        np.testing.assert_allclose(probs, probs_full[:, :, t0:t1, :t1], rtol=1e-12, atol=1e-15)
        ys.append(y)
    assert rel_error(np.concatenate(ys, axis=1), y_full) <= 1e-12
    assert rel_error(past[0], k_full) <= 1e-15 and rel_error(past[1], v_full) <= 1e-15
    assert layer(x, mask)[2] is None  # no cache returned unless asked


def causal_case(seed=0, **flags):
    return dict(B=2, T=6, H=2, C=6, seed=seed, mask_kind=None,
                flags=dict(scale_attn_weights=True, scale_attn_by_inverse_layer_idx=True, layer_idx=1, **flags))


@pytest.mark.parametrize("t", [0, 2, 5])
@pytest.mark.parametrize("mask_kind", [None, "left"])
def test_causality_forward_and_backward(t, mask_kind):
    case = {**causal_case(), "mask_kind": mask_kind}
    layer = randomize(build(case), np.random.default_rng(0))
    x, mask, _ = data(case)
    if mask is not None:
        mask[:, -1] = 1.0
    assert_causal(layer, x, mask, t)


@pytest.mark.parametrize("P", [1, 3])
def test_left_padding_leaves_real_outputs_and_gradients_unchanged(P):
    case = causal_case()
    assert_left_padding_invariant(randomize(build(case), np.random.default_rng(0)), data(case)[0], P)


@pytest.mark.parametrize("dtype, upcast", [("float64", False), ("float32", False), ("float32", True)])
def test_fully_masked_query_rows_stay_finite(dtype, upcast, backend):
    """A batch row with no real token at all: finite garbage (a uniform average over the visible keys), no NaN,
    forward or backward, even for a nonzero gradient there."""
    case = causal_case()
    layer = build(case, dtype, backend, reorder_and_upcast_attn=upcast, attn_pdrop=0.2)
    x = backend.asarray(data(case, dtype)[0])
    mask = np.ones((2, 6))
    mask[0] = 0.0
    mask = backend.asarray(mask)
    y, probs, _ = layer(x, mask)
    dx = layer.backward(backend.asarray(np.ones(x.shape, dtype)))
    assert all(np.all(np.isfinite(to_numpy(a))) for a in (y, probs, dx, *param_grads(layer).values()))
    plain = build(case, dtype, backend, reorder_and_upcast_attn=upcast)
    probs0 = to_numpy(plain(x, mask)[1])
    i = np.arange(6)
    np.testing.assert_allclose(probs0[0], np.broadcast_to(np.where(i[None] <= i[:, None], 1 / (i[:, None] + 1), 0),
                                                          probs0[0].shape), rtol=1e-6)


def test_gradients_accumulate_across_two_backward_calls(backend):
    case = causal_case()
    layer = randomize(build(case, backend=backend), np.random.default_rng(0))
    x, _, dout = data(case)
    assert_grads_accumulate(layer, (x,), dout)


@pytest.mark.parametrize("dtype, upcast", [("float64", False), ("float32", False), ("float32", True)])
def test_backend_equals_numpy(dtype, upcast, device_backend):
    """Mask, a past_kv cache, both dropouts (strict draws NumPy's masks) and upcasting."""
    b = device_backend
    flags = dict(attn_pdrop=twin_dropout(b, 0.3), resid_pdrop=twin_dropout(b, 0.2), reorder_and_upcast_attn=upcast)
    case = {**causal_case(3, **flags), "mask_kind": "left"}
    layer = randomize(build(case, dtype), np.random.default_rng(0))
    other = twin(layer, lambda backend: build(case, dtype, backend=backend), b)
    x, mask, dout = data(case, dtype)
    ours = past_kv_pass(layer, x, mask, dout)
    theirs = past_kv_pass(other, *(b.asarray(a) for a in (x, mask, dout)))
    assert all(is_on(a, b) and dtype_name(a.dtype) == dtype for a in theirs.values())
    assert_close(theirs, ours, twin_tol(b, dtype))


@pytest.mark.parametrize("upcast", [False, True])
def test_float32_stays_float32(upcast, backend):
    case = {**causal_case(attn_pdrop=0.3, resid_pdrop=0.3, reorder_and_upcast_attn=upcast), "mask_kind": "left"}
    out = past_kv_pass(build(case, "float32", backend), *(backend.asarray(a) for a in data(case, "float32")))
    assert all(a.dtype == backend.xp.float32 for a in out.values())


def test_bad_input_names_argument_expected_and_received(backend):
    layer = CausalSelfAttention(4, 2, dtype="float64", backend=backend)

    def zeros(*shape):
        return backend.asarray(np.zeros(shape))

    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, 4\), got \(5, 4\)"):
        layer(zeros(5, 4))
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 4\), got \(2, 5, 3\)"):
        layer(zeros(2, 5, 3))
    with pytest.raises(ValueError, match="x: expected dtype float64, got float32"):
        layer(backend.asarray(np.zeros((2, 5, 4), np.float32)))
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 5\), got \(2, 4\)"):
        layer(zeros(2, 5, 4), backend.asarray(np.ones((2, 4))))
    _, _, past = layer(zeros(2, 3, 4), use_cache=True)
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 5\), got \(2, 2\)"):
        layer(zeros(2, 2, 4), backend.asarray(np.ones((2, 2))), past_kv=past)  # the mask covers past and new tokens


@pytest.mark.parametrize("resid_pdrop", [0.0, 0.5])
def test_bad_dout_names_argument_expected_and_received(resid_pdrop, backend):
    """A dout broadcasting against (B, T, C) would pass through dropout and c_proj silently without the check."""
    assert_bad_dout_raises(CausalSelfAttention(4, 2, resid_pdrop=resid_pdrop, backend=backend), (2, 5, 4))


@pytest.mark.parametrize("C, n_head", [(6, 4), (4, 0), (5, 2)])
def test_hidden_size_not_divisible_by_heads_raises_at_construction(C, n_head):
    with pytest.raises(ValueError, match=rf"n_head: expected a positive divisor of hidden_size {C}, got {n_head}"):
        CausalSelfAttention(C, n_head)


def test_eval_mode_differentiates_and_no_grad_keeps_nothing(backend):
    assert_grad_modes(lambda p: CausalSelfAttention(4, 2, attn_pdrop=p, resid_pdrop=p, gen=Generator(0, backend),
                                                    backend=backend, dtype="float64"),
                      backend.asarray(np.random.default_rng(1).normal(size=(2, 3, 4))))
