"""DecisionTransformerModel and its GPT-2 encoder on their own: finite differences through the whole model,
every backend against NumPy, incremental decoding, initialization, state dicts, modes and bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import numerical_grad, rel_error
from layer_helpers import is_on, twin_tol
import minidt
from minidt import DecisionTransformerConfig, DecisionTransformerGPT2Model, DecisionTransformerModel, parity, to_numpy
from minidt.backend import dtype_name, get_backend

SMALL = dict(state_dim=3, act_dim=2, hidden_size=8, n_layer=2, n_head=2, max_ep_len=20, activation_function="gelu",
             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def inputs(config, B=2, T=4, seed=0):
    return parity.make_inputs(config, B, T, seed)


def upstream(model, x, seed=1):
    """model(**x) and random upstream gradients (host arrays of the model's dtype), zero at padding."""
    rng = np.random.default_rng(seed)
    real = x["attention_mask"][..., None]
    out = model(**x)
    dtype = dtype_name(model.dtype)
    return out, {k: (rng.normal(size=getattr(out, k).shape) * real).astype(dtype)
                 for k in ("state_preds", "action_preds", "return_preds")}


def on(backend, x: dict) -> dict:
    """Host inputs moved to a backend (None stays None)."""
    return {k: None if v is None else backend.asarray(v) for k, v in x.items()}


def test_whole_model_backward_matches_finite_differences():
    """Every parameter of a small float64 model, a few entries each: relative error <= 1e-6."""
    config = DecisionTransformerConfig(**SMALL)
    model = DecisionTransformerModel(config, dtype="float64", seed=0)
    parity.perturb_layernorms(model)
    x = inputs(config)
    out, g = upstream(model, x)
    model.zero_grad()
    model.backward(**g)

    def loss():
        o = model(**x)
        return sum(float(np.sum(getattr(o, k) * v)) for k, v in g.items())

    rng = np.random.default_rng(0)
    for name, p in model.named_parameters():
        if name == "encoder.wte.weight":
            assert p.grad is None  # the Decision Transformer feeds embeddings, never token ids
            continue
        flat = p.data.reshape(-1)
        idx = rng.choice(flat.size, size=min(4, flat.size), replace=False)
        num = []
        for i in idx:
            old = flat[i]
            flat[i] = old + 1e-5
            fp = loss()
            flat[i] = old - 1e-5
            fm = loss()
            flat[i] = old
            num.append((fp - fm) / 2e-5)
        # error relative to the scale of this parameter's whole gradient, as rel_error does for full tensors
        err = np.max(np.abs(p.grad.reshape(-1)[idx] - num)) / np.max(np.abs(p.grad))
        assert err <= 1e-6, name


def test_gpt2_input_ids_backward_reaches_wte():
    config = DecisionTransformerConfig(**SMALL, vocab_size=7)
    enc = DecisionTransformerGPT2Model(config, dtype="float64")
    ids = np.array([[1, 3, 3, 6], [0, 1, 2, 2]])
    dout = np.random.default_rng(0).normal(size=(2, 4, 8))
    enc(input_ids=ids, use_cache=False)
    assert enc.backward(dout) is None
    w = enc.wte.weight.data
    num = numerical_grad(lambda: float(np.sum(enc(input_ids=ids, use_cache=False).last_hidden_state * dout)), w)
    assert rel_error(enc.wte.weight.grad, num) <= 1e-6


def test_incremental_decoding_equals_full_pass():
    config = DecisionTransformerConfig(**SMALL)
    enc = DecisionTransformerGPT2Model(config, dtype="float64").eval()
    x = np.random.default_rng(0).normal(size=(2, 7, 8))
    mask = np.ones((2, 7))
    mask[0, :2] = 0
    full = enc(inputs_embeds=x, attention_mask=mask).last_hidden_state
    past, outs = None, []
    for t0, t1 in [(0, 3), (3, 4), (4, 7)]:
        o = enc(inputs_embeds=x[:, t0:t1], attention_mask=mask[:, :t1], past_key_values=past, use_cache=True)
        past = o.past_key_values
        outs.append(o.last_hidden_state)
    inc = np.concatenate(outs, axis=1)
    real = mask > 0
    assert rel_error(inc[real], full[real]) <= 1e-12


def test_hidden_states_and_attentions_shapes():
    config = DecisionTransformerConfig(**SMALL)
    model = DecisionTransformerModel(config, dtype="float64")
    out = model(**inputs(config, 2, 5), output_hidden_states=True, output_attentions=True)
    assert out.state_preds.shape == (2, 5, 3) and out.action_preds.shape == (2, 5, 2)
    assert out.return_preds.shape == (2, 5, 1) and out.last_hidden_state.shape == (2, 15, 8)
    assert len(out.hidden_states) == config.n_layer + 1 and out.hidden_states[-1] is out.last_hidden_state
    assert len(out.attentions) == config.n_layer and out.attentions[0].shape == (2, 2, 15, 15)
    sp, ap, rp = model(**inputs(config, 2, 5), return_dict=False)
    assert ap.shape == (2, 5, 2)
    default = model(**inputs(config, 2, 5))
    assert default.hidden_states is None and default.attentions is None


def test_action_tanh_bounds_actions():
    config = DecisionTransformerConfig(**SMALL, initializer_range=2.0)
    out = DecisionTransformerModel(config, seed=0)(**inputs(config))
    assert np.all(np.abs(out.action_preds) <= 1.0)


def test_initialization_scheme():
    config = DecisionTransformerConfig(**{**SMALL, "hidden_size": 64, "n_head": 1, "n_layer": 3, "max_ep_len": 200})
    model = DecisionTransformerModel(config, dtype="float64", seed=0)
    p = dict(model.named_parameters())
    assert np.std(p["encoder.h.0.attn.c_attn.weight"].data) == pytest.approx(0.02, rel=0.05)
    assert np.std(p["encoder.h.0.mlp.c_proj.weight"].data) == pytest.approx(0.02 / np.sqrt(6), rel=0.05)
    assert np.std(p["embed_timestep.weight"].data) == pytest.approx(0.02, rel=0.05)
    assert np.all(p["embed_state.bias"].data == 0) and np.all(p["encoder.ln_f.weight"].data == 1)
    zero = DecisionTransformerModel(DecisionTransformerConfig(**SMALL, initializer_range=0.0))
    for name, q in zero.named_parameters():  # the HF check `_config_zero_init`: only LayerNorm weights are 1
        expected = 1.0 if (".ln_" in name or name.startswith("embed_ln")) and name.endswith("weight") else 0.0
        assert np.all(q.data == expected), name
    a = DecisionTransformerModel(config, seed=3).state_dict()
    b = DecisionTransformerModel(config, seed=3).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_gradients_accumulate_and_zero_grad(backend):
    config = DecisionTransformerConfig(**SMALL)
    model = DecisionTransformerModel(config, dtype="float64", backend=backend)
    x = inputs(config)
    _, g = upstream(model, x)
    model.backward(**g)
    first = {n: np.array(to_numpy(p.grad)) for n, p in model.named_parameters() if p.grad is not None}
    model(**x)
    model.backward(**g)
    for n, p in model.named_parameters():
        if n in first:
            np.testing.assert_allclose(to_numpy(p.grad), 2 * first[n], rtol=1e-12, atol=1e-15)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_eval_mode_gradients_equal_dropout_zero_training_gradients_to_the_bit(dtype, backend):
    """eval() switches dropout off and nothing else, as in PyTorch: a model with dropout 0.3 in eval mode gives
    the bits of the same weights with dropout 0 in training mode, outputs and every gradient."""
    dropout = {"resid_pdrop": 0.3, "attn_pdrop": 0.3, "embd_pdrop": 0.3}
    evaluated = DecisionTransformerModel(DecisionTransformerConfig(**{**SMALL, **dropout}), dtype=dtype, seed=0,
                                         backend=backend).eval()
    plain = DecisionTransformerModel(DecisionTransformerConfig(**SMALL), dtype=dtype, seed=0, backend=backend)
    assert plain.training and not evaluated.training
    x = inputs(DecisionTransformerConfig(**SMALL), B=3, T=5)
    (out_e, g), (out_p, _) = upstream(evaluated, x), upstream(plain, x)
    for k in ("state_preds", "action_preds", "return_preds"):
        np.testing.assert_array_equal(to_numpy(getattr(out_e, k)), to_numpy(getattr(out_p, k)))
    evaluated.backward(**g)
    plain.backward(**g)
    grads = dict(plain.named_parameters())
    for name, p in evaluated.named_parameters():
        np.testing.assert_array_equal(to_numpy(p.grad), to_numpy(grads[name].grad), err_msg=name)


def test_no_grad_keeps_nothing_and_backward_names_it(backend):
    config = DecisionTransformerConfig(**SMALL)
    model = DecisionTransformerModel(config, backend=backend)
    d = backend.asarray(np.ones((2, 4, config.act_dim), np.float32))
    with pytest.raises(RuntimeError, match=r"DecisionTransformerModel.backward: no forward pass to differentiate; "
                                           r"call forward first"):
        model.backward(action_preds=d)
    with minidt.no_grad():
        assert not minidt.is_grad_enabled()
        model(**inputs(config))
    assert minidt.is_grad_enabled()
    assert all(getattr(m, "cache", None) is None for m in model.modules())
    with pytest.raises(RuntimeError, match=r"DecisionTransformerModel.backward: no forward pass to differentiate; "
                                           r"its last forward ran under minidt.no_grad\(\)"):
        model.backward(action_preds=d)
    model(**inputs(config))
    model.backward(action_preds=d)
    with pytest.raises(RuntimeError, match="each forward serves one backward"):
        model.backward(action_preds=d)


def test_grad_mode_is_per_thread_nests_and_decorates():
    import threading

    seen = []
    with minidt.no_grad():
        t = threading.Thread(target=lambda: seen.append(minidt.is_grad_enabled()))
        t.start()
        t.join()
        with minidt.enable_grad():
            seen.append(minidt.is_grad_enabled())
        seen.append(minidt.is_grad_enabled())
    assert seen == [True, True, False]  # a new thread starts with grad mode on, as in torch

    @minidt.no_grad()
    def inside():
        return minidt.is_grad_enabled()

    assert inside() is False and minidt.is_grad_enabled()
    with minidt.set_grad_enabled(False):
        assert not minidt.is_grad_enabled()
    assert minidt.is_grad_enabled()
    minidt.set_grad_enabled(False)
    assert not minidt.is_grad_enabled()
    minidt.set_grad_enabled(True)
    with pytest.raises(KeyError):  # the mode is restored when the block raises
        with minidt.no_grad():
            raise KeyError
    assert minidt.is_grad_enabled()


def test_get_action_keeps_nothing_for_backward(backend):
    config = DecisionTransformerConfig(**SMALL)
    model = DecisionTransformerModel(config, backend=backend).eval()
    model.get_action(**inputs(config))
    assert all(getattr(m, "cache", None) is None for m in model.modules())
    assert minidt.is_grad_enabled()


def test_repr_device_and_to_by_pytorch_names():
    config = DecisionTransformerConfig(**SMALL)
    model = DecisionTransformerModel(config)
    text = repr(model)
    assert text.startswith("DecisionTransformerModel(\n  state_dim=3, act_dim=2, hidden_size=8, n_layer=2, "
                           f"parameters={model.num_parameters():,}, dtype=float32, device='cpu'")
    for line in ["(embed_state): Linear(in_features=3, out_features=8)",
                 "(c_attn): Conv1D(in_features=8, out_features=24)", "(wpe): Embedding(1024, 8)",
                 "(ln_f): LayerNorm((8,), eps=1e-05)", "(act): Activation('gelu')", "(drop): Dropout(p=0.0)"]:
        assert line in text, line
    assert model.num_parameters() == sum(p.data.size for p in model.parameters())
    assert model.device == "cpu"
    x = inputs(config)
    want = model(**x).action_preds
    assert model.to("strict") is model and model.device == "strict:device1"
    assert type(model.embed_state.weight.data).__module__.startswith("array_api_strict")
    b = get_backend("strict")
    np.testing.assert_allclose(to_numpy(model(**{k: b.asarray(v) for k, v in x.items()}).action_preds), want,
                               rtol=1e-6)
    model.to("cpu")
    assert model.device == "cpu" and isinstance(model.embed_state.weight.data, np.ndarray)
    with pytest.raises(ValueError, match=r"device: expected 'cpu', 'cuda', 'cuda:N' or a backend name .*, got 'tpu'"):
        model.to("tpu")


def test_subpackages_are_attributes_after_import_minidt():
    code = ("import minidt; print(minidt.optim.AdamW.__name__, minidt.losses.__name__, minidt.data.SegmentSampler"
            ".__name__, minidt.layers.Linear.__name__, minidt.evaluate.rollout.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["AdamW", "minidt.losses", "SegmentSampler", "Linear", "rollout"]
    import minidt as m

    assert "optim" in dir(m)
    with pytest.raises(AttributeError, match="module 'minidt' has no attribute 'optimizer'"):
        m.optimizer


def test_dropout_is_reproducible_by_seed_and_off_in_eval(backend):
    config = DecisionTransformerConfig(**{**SMALL, "resid_pdrop": 0.3, "attn_pdrop": 0.3, "embd_pdrop": 0.3})
    x = inputs(config)

    def model(seed):
        return DecisionTransformerModel(config, dtype="float64", seed=seed, backend=backend)

    a, b, c = (to_numpy(model(seed)(**x).action_preds) for seed in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    m = model(1).eval()
    np.testing.assert_array_equal(to_numpy(m(**x).action_preds), to_numpy(m(**x).action_preds))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backend_equals_numpy_end_to_end(dtype, device_backend):
    """The GPU proof (on strict, its stand-in): forward and backward on the device, same numbers as NumPy, and
    float32 stays float32 in every output and gradient."""
    b = device_backend
    config = DecisionTransformerConfig(**{**SMALL, "reorder_and_upcast_attn": dtype == "float32"})
    ref = DecisionTransformerModel(config, dtype=dtype, seed=0, backend="numpy")
    other = DecisionTransformerModel(config, dtype=dtype, seed=0, backend=b)
    x = inputs(config)
    o1, g = upstream(ref, x)
    o2 = other(**on(b, x), output_hidden_states=True, output_attentions=True)
    assert is_on(o2.action_preds, b)
    tol = twin_tol(b, dtype) * (1 if dtype == "float64" else 10)  # float32: 3 layers of float32 round-off
    for k in ("state_preds", "action_preds", "return_preds"):
        assert rel_error(to_numpy(getattr(o2, k)), getattr(o1, k)) <= tol
        assert str(getattr(o2, k).dtype).endswith(dtype)
    ref.backward(**g)
    other.backward(**on(b, g))
    for (n, p), q in zip(ref.named_parameters(), other.parameters()):
        if p.grad is None:
            assert q.grad is None
            continue
        assert str(q.grad.dtype).endswith(dtype), n
        assert rel_error(to_numpy(q.grad), p.grad) <= tol * 10, n


def test_float32_model_never_upcasts(backend):
    config = DecisionTransformerConfig(**SMALL)
    model = DecisionTransformerModel(config, dtype="float32", backend=backend)
    out, g = upstream(model, inputs(config))
    f32 = backend.xp.float32
    assert all(v.dtype == f32 for v in (out.state_preds, out.action_preds, out.return_preds))
    model.backward(**g)
    assert all(p.grad.dtype == f32 for p in model.parameters() if p.grad is not None)


def test_to_moves_between_backends(device_backend):
    config = DecisionTransformerConfig(**SMALL)
    model = DecisionTransformerModel(config, dtype="float64", seed=0, backend="numpy")
    x = inputs(config)
    before = model(**x).action_preds
    model.to(device_backend.name)
    assert all(is_on(p.data, device_backend) for p in model.parameters())
    after = to_numpy(model(**x).action_preds)
    model.to("numpy")
    np.testing.assert_allclose(after, before, rtol=1e-12)
    np.testing.assert_allclose(model(**x).action_preds, before, rtol=1e-12)


def test_state_dict_round_trip_and_strictness(backend):
    config = DecisionTransformerConfig(**SMALL)
    a = DecisionTransformerModel(config, seed=0, backend=backend)
    b = DecisionTransformerModel(config, seed=1, backend=backend)
    b.load_state_dict(a.state_dict())
    assert all(np.array_equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    sub = {"embed_ln.weight": np.full(8, 2.0)}
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict(sub)
    b.load_state_dict(sub, strict=False)
    assert np.all(b.state_dict()["embed_ln.weight"] == 2.0)
    with pytest.raises(ValueError, match=r"embed_ln.weight.*expected shape \(8,\), got \(3,\)"):
        b.load_state_dict({"embed_ln.weight": np.ones(3)}, strict=False)
    with pytest.raises(ValueError, match="unexpected"):
        b.load_state_dict({**a.state_dict(), "encoder.h.9.attn.c_attn.weight": np.ones(2)})
    legacy = {**a.state_dict(), "encoder.h.0.attn.bias": np.ones((1, 1, 4, 4)),
              "encoder.h.0.attn.masked_bias": np.array(-1e4)}
    b.load_state_dict(legacy)  # GPT-2's old mask buffers are ignored


@pytest.mark.parametrize("bad, match", [
    (dict(states=np.zeros((2, 4, 5))), r"states: expected shape \(\*, \*, 3\), got \(2, 4, 5\)"),
    (dict(actions=np.zeros((2, 3, 2))), r"actions: expected shape \(2, 4, 2\), got \(2, 3, 2\)"),
    (dict(returns_to_go=np.zeros((2, 4))), r"returns_to_go: expected shape \(2, 4, 1\), got \(2, 4\)"),
    (dict(timesteps=np.full((2, 4), 20)), r"timesteps: expected values in \[0, 19\]"),
    (dict(timesteps=np.zeros((2, 4)) + 0.5), "timesteps: expected an integer dtype"),
    (dict(attention_mask=np.ones((2, 5))), r"attention_mask: expected shape \(2, 4\), got \(2, 5\)"),
])
def test_bad_input_names_the_argument(bad, match, backend):
    """Host inputs, checked on the host before they are moved (timesteps' range too)."""
    config = DecisionTransformerConfig(**SMALL)
    x = {**inputs(config), **bad}
    with pytest.raises(ValueError, match=match):
        DecisionTransformerModel(config, backend=backend)(**x)


def test_backward_needs_a_gradient_of_the_right_shape(backend):
    config = DecisionTransformerConfig(**SMALL)
    model = DecisionTransformerModel(config, backend=backend)
    model(**inputs(config))
    with pytest.raises(ValueError, match="at least one"):
        model.backward()
    with pytest.raises(ValueError, match=r"action_preds: expected shape \(2, 4, 2\)"):
        model.backward(action_preds=backend.asarray(np.ones((2, 4, 3))))


lean_configs = st.builds(
    dict, n_layer=st.integers(1, 3), n_head=st.sampled_from([1, 2]), action_tanh=st.booleans(),
    activation_function=st.sampled_from(["relu", "gelu_new"]), reorder_and_upcast_attn=st.booleans())


@settings(max_examples=30, deadline=None)
@given(lean_configs, st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**16),
       st.sampled_from(["left", "any", "none"]))
def test_get_action_equals_the_last_action_of_forward(d, T, B, seed, mask):
    """The rollout's lean path (last block for the last state token only, the trailing action token dropped) is
    the full forward's action_preds[:, -1]: float64, every depth; masks left-padded, any pattern (the last step
    padded too), or nothing real (the forward's finite garbage, which get_action must reproduce as well).
    Relative error <= 1e-12 (1e-6 with reorder_and_upcast_attn, which computes its scores in float32 by
    definition)."""
    config = DecisionTransformerConfig(**{**SMALL, **d})
    model = DecisionTransformerModel(config, dtype="float64", seed=seed).eval()
    parity.perturb_layernorms(model, seed)
    x = inputs(config, B, T, seed)
    if mask == "any":
        x["attention_mask"] = (np.random.default_rng(seed).random((B, T)) > 0.5).astype(np.float64)
    elif mask == "none":
        x["attention_mask"] = np.zeros((B, T))
    full = model(**x).action_preds[:, -1]
    lean = model.get_action(**x)
    assert lean.shape == (B, config.act_dim)
    assert rel_error(lean, full) <= (1e-6 if d["reorder_and_upcast_attn"] else 1e-12)


def test_get_action_on_a_device_backend_and_its_guards(device_backend):
    b = device_backend
    config = DecisionTransformerConfig(**SMALL)
    x = inputs(config, 3, 5)
    host = DecisionTransformerModel(config, dtype="float64", seed=0, backend="numpy").eval()
    dev = DecisionTransformerModel(config, dtype="float64", seed=0, backend=b).eval()
    a = dev.get_action(**on(b, x))
    assert is_on(a, b)
    assert rel_error(to_numpy(a), host.get_action(**x)) <= 1e-12
    f32 = DecisionTransformerModel(config, dtype="float32", seed=0, backend=b).eval()
    assert f32.get_action(**on(b, x)).dtype == b.xp.float32
    with pytest.raises(RuntimeError, match="expected eval mode .*, got training mode"):
        host.train().get_action(**x)
    host.eval()
    with pytest.raises(ValueError, match="states: expected at least one timestep"):
        host.get_action(**{k: v[:, :0] for k, v in x.items()})
    with pytest.raises(ValueError, match=r"inputs_embeds: expected at least one token, got shape \(2, 0, 8\)"):
        host.encoder.forward_last(np.zeros((2, 0, 8)))
    with pytest.raises(ValueError, match=r"actions: expected shape \(3, 5, 2\), got \(3, 4, 2\)"):
        host.get_action(**{**x, "actions": np.zeros((3, 4, 2))})
