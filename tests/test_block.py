"""layers/block.py: the pre-LN GPT-2 block, x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)), against transformers'
GPT2Block (eager attention, fed the 4-D additive mask GPT2Model would build: see test_attention.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import rel_error
from layer_helpers import (TORCH_TOL, assert_bad_dout_raises, assert_causal, assert_close, assert_grad_modes,
                           assert_grads_accumulate, assert_left_padding_invariant, copy_to_torch, fd_check,
                           fully_masked, is_on, make_mask, param_grads, past_kv_pass, randomize, reference_mask, seeds,
                           torch_grads, twin, twin_dropout, twin_tol)
from minidt import to_numpy
from minidt.backend import Generator, dtype_name
from minidt.layers import Block
from minidt.layers.attention import attention_bias

PARAMS = {"ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
          "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
          "mlp.c_proj.bias"}


@st.composite
def cases(draw, dropout: bool = True, mask_kinds=(None, "left", "random")):
    H, D = draw(st.sampled_from([(1, 2), (1, 3), (2, 1), (2, 2)]))  # C >= 2: LayerNorm over 1 feature is constant
    flags = dict(n_inner=draw(st.sampled_from([None, 1, 3])),
                 activation=draw(st.sampled_from(["relu", "silu", "gelu", "gelu_new", "tanh"])),
                 layer_norm_epsilon=draw(st.sampled_from([1e-5, 0.1])),
                 scale_attn_weights=draw(st.booleans()), scale_attn_by_inverse_layer_idx=draw(st.booleans()),
                 layer_idx=draw(st.integers(0, 3)))
    if dropout:
        flags.update(attn_pdrop=draw(st.sampled_from([0.0, 0.3])), resid_pdrop=draw(st.sampled_from([0.0, 0.3])))
    return dict(B=draw(st.integers(1, 2)), T=draw(st.integers(1, 3)), H=H, C=H * D, flags=flags,
                mask_kind=draw(st.sampled_from(mask_kinds)), seed=draw(st.integers(**seeds)))


def build(case: dict, dtype: str = "float64", backend="numpy", **over) -> Block:
    return Block(case["C"], case["H"], gen=Generator(case["seed"], backend), backend=backend, dtype=dtype,
                 **{**case["flags"], **over})


def data(case: dict, dtype: str = "float64"):
    """x (B, T, C), mask (B, T) or None, dout (B, T, C) zero on fully masked query rows."""
    rng = np.random.default_rng(case["seed"] + 1)
    B, T, C = case["B"], case["T"], case["C"]
    x = rng.normal(size=(B, T, C)).astype(dtype)
    mask = make_mask(rng, B, T, case["mask_kind"])
    dout = (rng.normal(size=(B, T, C)) * ~fully_masked(mask, B, T, T)[..., None]).astype(dtype)
    return x, mask, dout


def reference(torch, block: Block, case: dict):
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

    f = case["flags"]
    config = GPT2Config(n_embd=case["C"], n_head=case["H"], n_inner=f["n_inner"], activation_function=f["activation"],
                        layer_norm_epsilon=f["layer_norm_epsilon"], scale_attn_weights=f["scale_attn_weights"],
                        scale_attn_by_inverse_layer_idx=f["scale_attn_by_inverse_layer_idx"],
                        attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    config._attn_implementation = "eager"
    ref = GPT2Block(config, layer_idx=f["layer_idx"])
    copy_to_torch(torch, block, ref)
    return ref


def run_reference(ref, x_t, mask_4d):
    out = ref(x_t, attention_mask=mask_4d)
    return out[0] if isinstance(out, tuple) else out  # a tensor in 5.x; a tuple in some releases


@given(cases())
def test_backward_matches_finite_differences(case):
    """Input and all twelve parameters, over activations, eps, the attention flags, padding and both dropouts."""
    block = randomize(build(case), np.random.default_rng(case["seed"]))
    x, mask, dout = data(case)
    state = block.attn.gen.get_state()  # one Generator serves every dropout of the block

    def run():
        block.attn.gen.set_state(state)
        return block(x, mask)[0]

    assert fd_check(block, run, dout, {"x": x}).keys() == PARAMS | {"x"}


@given(cases(dropout=False))
def test_matches_gpt2_block_fed_the_same_bias(torch, case):
    """Every row, dx and every parameter gradient."""
    block = randomize(build(case), np.random.default_rng(case["seed"]))
    x, mask, _ = data(case)
    dout = np.random.default_rng(case["seed"] + 3).normal(size=x.shape)
    bias = attention_bias(mask, x.shape[1], x.shape[1], np.float64, x)
    out, _, _ = block(x, bias=bias)
    dx = block.backward(dout)
    ref = reference(torch, block, case)
    xt = torch.tensor(x, requires_grad=True)
    out_t = run_reference(ref, xt, torch.from_numpy(bias))
    theirs = torch_grads(torch, out_t, dout, {"x": xt, **dict(ref.named_parameters())})
    assert_close({"out": out, "x": dx, **param_grads(block)}, {"out": out_t.detach().numpy(), **theirs}, TORCH_TOL)


@given(cases(dropout=False))
def test_matches_gpt2_block_with_its_own_mask(torch, case):
    """minidt from the (B, T) attention_mask, the reference from create_causal_mask's 4-D mask: outputs on query
    rows that see a real key, gradients for a dout that is zero on the rest."""
    block = randomize(build(case), np.random.default_rng(case["seed"]))
    x, mask, dout = data(case)
    keep = ~fully_masked(mask, *x.shape[:2], x.shape[1])
    out, _, _ = block(x, mask)
    dx = block.backward(dout)
    ref = reference(torch, block, case)
    xt = torch.tensor(x, requires_grad=True)
    out_t = run_reference(ref, xt, reference_mask(torch, xt, mask))
    theirs = torch_grads(torch, out_t, dout, {"x": xt, **dict(ref.named_parameters())})
    assert_close({"out": out[keep], "x": dx, **param_grads(block)},
                 {"out": out_t.detach().numpy()[keep], **theirs}, TORCH_TOL)


def small_case(seed: int = 0, **flags) -> dict:
    return dict(B=2, T=6, H=2, C=4, seed=seed, mask_kind=None,
                flags=dict(n_inner=None, activation="gelu_new", layer_norm_epsilon=1e-5, scale_attn_weights=True,
                           scale_attn_by_inverse_layer_idx=True, layer_idx=2, **flags))


@pytest.mark.parametrize("t", [0, 3, 5])
def test_causality_forward_and_backward(t):
    case = small_case()
    assert_causal(randomize(build(case), np.random.default_rng(0)), data(case)[0], None, t)


@pytest.mark.parametrize("P", [1, 3])
def test_left_padding_leaves_real_outputs_and_gradients_unchanged(P):
    case = small_case()
    assert_left_padding_invariant(randomize(build(case), np.random.default_rng(0)), data(case)[0], P)


@pytest.mark.parametrize("dtype, upcast", [("float64", False), ("float32", True)])
def test_fully_masked_rows_stay_finite(dtype, upcast, backend):
    case = small_case(attn_pdrop=0.2, resid_pdrop=0.2, reorder_and_upcast_attn=upcast)
    block = build(case, dtype, backend)
    x = backend.asarray(data(case, dtype)[0])
    mask = np.ones((2, 6))
    mask[1] = 0.0
    out, probs, _ = block(x, backend.asarray(mask))
    dx = block.backward(backend.asarray(np.ones(x.shape, dtype)))
    assert all(np.all(np.isfinite(to_numpy(a))) for a in (out, probs, dx, *param_grads(block).values()))


@settings(max_examples=10)
@given(cases(dropout=False, mask_kinds=(None, "left")), st.integers(1, 2))
def test_past_kv_decoding_equals_the_full_pass(case, T_extra):
    block = randomize(build(case), np.random.default_rng(case["seed"])).eval()
    rng = np.random.default_rng(case["seed"])
    B, T, C = case["B"], case["T"] + T_extra, case["C"]
    x = rng.normal(size=(B, T, C))
    mask = make_mask(rng, B, T, case["mask_kind"])
    full, probs_full, _ = block(x, mask)
    t = case["T"]
    y1, _, past = block(x[:, :t], None if mask is None else mask[:, :t], use_cache=True)
    y2, probs2, _ = block(x[:, t:], mask, past_kv=past, use_cache=True)
    assert rel_error(np.concatenate([y1, y2], axis=1), full) <= 1e-12
    assert rel_error(probs2, probs_full[:, :, t:]) <= 1e-12


def test_gradients_accumulate_across_two_backward_calls(backend):
    case = small_case()
    block = randomize(build(case, backend=backend), np.random.default_rng(0))
    x, _, dout = data(case)
    assert_grads_accumulate(block, (x,), dout)


@pytest.mark.parametrize("dtype, upcast", [("float64", False), ("float32", False), ("float32", True)])
def test_backend_equals_numpy_and_float32_stays_float32(dtype, upcast, device_backend):
    b = device_backend
    flags = dict(attn_pdrop=twin_dropout(b, 0.3), resid_pdrop=twin_dropout(b, 0.3), reorder_and_upcast_attn=upcast)
    case = {**small_case(1, **flags), "mask_kind": "left"}
    block = randomize(build(case, dtype), np.random.default_rng(0))
    other = twin(block, lambda backend: build(case, dtype, backend), b)
    x, mask, dout = data(case, dtype)
    ours = past_kv_pass(block, x, mask, dout)
    theirs = past_kv_pass(other, *(b.asarray(a) for a in (x, mask, dout)))
    assert all(a.dtype == np.dtype(dtype) for a in ours.values())
    assert all(is_on(a, b) and dtype_name(a.dtype) == dtype for a in theirs.values())
    assert_close(theirs, ours, twin_tol(b, dtype))


def test_bad_input_names_argument_expected_and_received(backend):
    block = Block(4, 2, backend=backend)

    def zeros(*shape, dtype="float32"):
        return backend.asarray(np.zeros(shape, dtype))

    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 4\), got \(2, 3, 5\)"):
        block(zeros(2, 3, 5))
    with pytest.raises(ValueError, match="x: expected dtype float32, got float64"):
        block(zeros(2, 3, 4, dtype="float64"))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, 4\), got \(3, 4\)"):
        block(zeros(3, 4))
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 3\), got \(3, 2\)"):
        block(zeros(2, 3, 4), backend.asarray(np.ones((3, 2))))
    with pytest.raises(ValueError, match="n_head: expected a positive divisor of hidden_size 6, got 4"):
        Block(6, 4, backend=backend)
    with pytest.raises(ValueError, match=r"activation_function: expected one of .*got 'gelu_pytorch_tanh'"):
        Block(4, 2, activation="gelu_pytorch_tanh", backend=backend)


@pytest.mark.parametrize("resid_pdrop", [0.0, 0.5])
def test_bad_dout_names_argument_expected_and_received(resid_pdrop, backend):
    assert_bad_dout_raises(Block(4, 2, resid_pdrop=resid_pdrop, backend=backend), (2, 5, 4))


def test_eval_mode_differentiates_and_no_grad_keeps_nothing(backend):
    assert_grad_modes(lambda p: Block(4, 2, attn_pdrop=p, resid_pdrop=p, gen=Generator(0, backend), backend=backend,
                                      dtype="float64"),
                      backend.asarray(np.random.default_rng(1).normal(size=(2, 3, 4))))
