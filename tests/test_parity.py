"""The model against transformers' DecisionTransformerModel: identical weights and inputs, every output at unmasked
positions and every parameter gradient, across configs drawn by hypothesis."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require
from minidt import DecisionTransformerConfig, DecisionTransformerModel, parity


@pytest.fixture(autouse=True)
def _reference():
    require("torch")
    require("transformers")


configs = st.builds(
    dict,
    state_dim=st.integers(1, 5),
    act_dim=st.integers(1, 3),
    n_head=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([3, 4]),  # hidden_size >= 3: LayerNorm over 2 features has a zero Jacobian
    n_inner=st.one_of(st.none(), st.integers(3, 20)),
    n_layer=st.integers(1, 3),
    activation_function=st.sampled_from(["relu", "silu", "gelu", "gelu_new", "tanh"]),
    action_tanh=st.booleans(),
    scale_attn_weights=st.booleans(),
    scale_attn_by_inverse_layer_idx=st.booleans(),
    layer_norm_epsilon=st.sampled_from([1e-5, 1e-3, 0.1]),
    max_ep_len=st.integers(8, 40),
)


def make_config(d: dict, **over) -> DecisionTransformerConfig:
    d = dict(d)
    n_head, head_dim = d.pop("n_head"), d.pop("head_dim")
    d.update(hidden_size=n_head * head_dim, n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    d.update(over)
    return DecisionTransformerConfig(**d)


def random_mask(rng: np.random.Generator, B: int, T: int, kind: str) -> np.ndarray:
    if kind == "left":
        mask = np.ones((B, T))
        for b in range(B):
            mask[b, : rng.integers(0, T)] = 0.0
    else:  # any pattern, last step real
        mask = (rng.random((B, T)) > 0.4).astype(np.float64)
        mask[:, -1] = 1.0
    return mask


def check(config: DecisionTransformerConfig, dtype: str, seed: int, T: int, mask_kind: str, ref_dtype="float64"):
    model = DecisionTransformerModel(config, dtype=dtype, seed=seed)
    parity.perturb_layernorms(model, seed)
    inputs = parity.make_inputs(config, 3, T, seed)
    inputs["attention_mask"] = random_mask(np.random.default_rng(seed), 3, T, mask_kind)
    rows = parity.compare(model, inputs, seed, ref_dtype)
    bad = [r for r in rows if not r.ok]
    assert not bad, parity.format_table(bad)
    return rows


@settings(max_examples=20)
@given(configs, st.integers(0, 2**16), st.integers(1, 6), st.sampled_from(["left", "random"]))
def test_float64_parity_across_configs(d, seed, T, mask_kind):
    """Outputs within 1e-9, gradients within 1e-8 (relative to the reference's scale)."""
    check(make_config(d), "float64", seed, T, mask_kind)


@settings(max_examples=8)
@given(configs, st.integers(0, 2**16), st.integers(1, 6))
def test_float32_against_float64_reference(d, seed, T):
    """minidt in float32 against the reference in float64: 1e-4 forward, 2e-3 gradients."""
    rows = check(make_config(d), "float32", seed, T, "left")
    assert max(r.max_rel for r in rows) > 0  # float32 really ran in float32


@settings(max_examples=8)
@given(configs, st.integers(0, 2**16), st.integers(1, 6))
def test_reorder_and_upcast_attn_in_float32(d, seed, T):
    """The reference raises for this flag in float64 (float32 scores plus a float64 mask), so both run float32."""
    check(make_config(d, reorder_and_upcast_attn=True), "float32", seed, T, "left", ref_dtype="float32")


def test_parity_run_default_config_and_table(backend):
    """The whole model against transformers on every backend: on a GPU, cuBLAS's float64 sums are round-off
    away from the reference's, well inside the tolerances."""
    rows = parity.run(DecisionTransformerConfig(state_dim=11, act_dim=3), dtype="float64", batch=2, steps=4,
                      backend=backend)
    table = parity.format_table(rows)
    assert all(r.ok for r in rows), table
    names = {r.name for r in rows}
    assert {"action_preds", "hidden_states[3]", "attentions[2]", "grad encoder.wpe.weight"} <= names
    assert "0 failed" in table.splitlines()[-1]


def test_named_parameters_equal_reference_state_dict_keys():
    import transformers

    config = DecisionTransformerConfig(state_dim=3, act_dim=2, hidden_size=8, n_layer=2)
    ref = transformers.DecisionTransformerModel(transformers.DecisionTransformerConfig(**config.to_dict()))
    ours = DecisionTransformerModel(config)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert {n: p.shape for n, p in ours.named_parameters()} == {n: tuple(p.shape) for n, p in ref.named_parameters()}


def test_forward_signature_order_matches_reference():
    import transformers

    ref = list(inspect.signature(transformers.DecisionTransformerModel.forward).parameters)[:10]
    ours = list(inspect.signature(DecisionTransformerModel.forward).parameters)
    assert ours == ref


def test_reference_integration_loop_gives_same_actions(tmp_path):
    """The reference's own integration test, on a locally made checkpoint: predict an action, append it, decrement
    the return-to-go by the reward, grow the context, for several steps."""
    torch = require("torch")
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.DecisionTransformerConfig(state_dim=11, act_dim=3, hidden_size=32, n_layer=2, n_head=2,
                                                    max_ep_len=1000)
    torch.manual_seed(0)
    ref = transformers.DecisionTransformerModel(config).eval()
    ref.save_pretrained(tmp_path)
    ours = DecisionTransformerModel.from_pretrained(tmp_path, dtype="float32").eval()

    rng = np.random.default_rng(0)
    state = rng.normal(size=(1, 1, 11)).astype(np.float32)
    actions = np.zeros((1, 1, 3), np.float32)
    rewards = np.zeros((1, 1), np.float32)
    rtg = np.array([[[1000.0]]], np.float32) / 1000.0
    timesteps = np.zeros((1, 1), np.int64)
    for step in range(4):
        mask = np.ones(timesteps.shape, np.float32)
        with torch.no_grad():
            _, ref_action, _ = ref(torch.from_numpy(state), torch.from_numpy(actions), torch.from_numpy(rewards),
                                   torch.from_numpy(rtg), torch.from_numpy(timesteps), torch.from_numpy(mask),
                                   return_dict=False)
        _, our_action, _ = ours(state, actions, rewards, rtg, timesteps, mask, return_dict=False)
        np.testing.assert_allclose(np.asarray(our_action), ref_action.numpy(), rtol=1e-4, atol=1e-6)
        lean = ours.get_action(state, actions, rewards, rtg, timesteps, mask)  # the rollout's path
        np.testing.assert_allclose(np.asarray(lean), ref_action[:, -1].numpy(), rtol=1e-4, atol=1e-6)
        action = ref_action[0, -1].numpy()
        actions[0, -1] = action
        reward = float(rng.normal())
        next_state = rng.normal(size=(1, 1, 11)).astype(np.float32)
        state = np.concatenate([state, next_state], axis=1)
        actions = np.concatenate([actions, np.zeros((1, 1, 3), np.float32)], axis=1)
        rewards = np.concatenate([rewards, np.array([[reward]], np.float32)], axis=1)
        rtg = np.concatenate([rtg, rtg[:, -1:] - reward / 1000.0], axis=1)
        timesteps = np.concatenate([timesteps, np.full((1, 1), step + 1, np.int64)], axis=1)


@settings(max_examples=10)
@given(configs, st.integers(0, 2**16), st.integers(1, 6))
def test_get_action_against_the_reference(d, seed, T):
    """The lean rollout path against the reference's action_preds[:, -1], float64, left-padded: <= 1e-10."""
    import torch

    config = make_config(d)
    model = DecisionTransformerModel(config, dtype="float64", seed=seed).eval()
    parity.perturb_layernorms(model, seed)
    x = parity.make_inputs(config, 3, T, seed)
    x["attention_mask"] = random_mask(np.random.default_rng(seed), 3, T, "left")
    ref = parity.reference_model(config, model.state_dict(), "float64").eval()
    with torch.no_grad():
        want = ref(**{k: torch.from_numpy(v) for k, v in x.items() if v is not None}, return_dict=False)[1][:, -1]
    got = model.get_action(**x)
    assert np.max(np.abs(got - want.numpy())) <= 1e-10 * max(1.0, float(np.max(np.abs(want.numpy()))))
