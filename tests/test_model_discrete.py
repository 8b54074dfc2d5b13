"""A discrete-action Decision Transformer: the config field, one-hot actions through embed_action (an embedding),
logits out, and transformers on both sides of a checkpoint (logits to 1e-9 in float64, gradients too)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import rel_error, require
from minidt import DecisionTransformerConfig, DecisionTransformerModel, parity
from minidt.backend import to_numpy

SMALL = dict(state_dim=3, act_dim=4, hidden_size=8, n_layer=2, n_head=2, max_ep_len=20, discrete_actions=True)


@pytest.fixture
def hf():
    require("torch")
    transformers = require("transformers")
    transformers.logging.set_verbosity_error()
    return transformers


def test_the_config_field():
    c = DecisionTransformerConfig(**SMALL)
    assert c.discrete_actions is True and c.action_tanh is False  # logits: no tanh by default
    assert json.loads(c.to_json_string())["discrete_actions"] is True
    plain = DecisionTransformerConfig()
    assert plain.discrete_actions is False and "discrete_actions" not in plain.to_dict()  # transformers' own keys
    with pytest.raises(ValueError, match="^action_tanh: expected false with discrete_actions true"):
        DecisionTransformerConfig(**SMALL, action_tanh=True)
    with pytest.raises(ValueError, match="^discrete_actions: expected true or false, got 1"):
        DecisionTransformerConfig(discrete_actions=1)
    c.action_tanh = True  # set later: checked when a model is built
    with pytest.raises(ValueError, match="^action_tanh: expected false"):
        DecisionTransformerModel(c)


def test_one_hot_through_linear_is_an_embedding(torch):
    """embed_action(one_hot(a)) = W[:, a] + b: torch.nn.Embedding with the weight W^T (its rows), plus the bias,
    as kzl/decision-transformer's Atari code embeds actions."""
    model = DecisionTransformerModel(DecisionTransformerConfig(**SMALL), dtype="float64", seed=0)
    W, b = (to_numpy(p.data) for p in (model.embed_action.weight, model.embed_action.bias))  # (C, A), (C,)
    model.embed_action.bias.data = np.random.default_rng(1).normal(size=b.shape)  # a bias that is not zero
    b = to_numpy(model.embed_action.bias.data)
    ids = np.random.default_rng(2).integers(0, 4, size=(3, 5))
    ours = model.embed_action(np.eye(4)[ids])  # 3,5,C
    emb = torch.nn.Embedding(4, 8)
    emb.weight.data = torch.tensor(W.T)
    theirs = (emb(torch.tensor(ids)) + torch.tensor(b)).detach().numpy()
    assert rel_error(ours, theirs) <= 1e-15


@pytest.mark.parametrize("seed", [0, 1])
def test_every_output_and_gradient_against_transformers(hf, seed):
    """parity.run: logits (action_preds), hidden states, attentions and every parameter gradient, float64."""
    rows = parity.run(DecisionTransformerConfig(**SMALL, activation_function="gelu"), batch=3, steps=5, seed=seed)
    assert all(r.ok for r in rows), parity.format_table(rows)
    assert next(r for r in rows if r.name == "action_preds").tol == 1e-9


def logits_both(ours: DecisionTransformerModel, ref, torch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = parity.make_inputs(ours.config, 3, 6, seed=3)
    ref.eval()
    ours.eval()
    with torch.no_grad():
        r = ref(**{k: torch.tensor(v, dtype=torch.long if k == "timesteps" else torch.float64)
                   for k, v in x.items()}).action_preds.numpy()
    return to_numpy(ours(**x).action_preds), r, x["attention_mask"] > 0


def test_minidt_checkpoint_loads_in_transformers_with_the_same_logits(hf, torch, tmp_path):
    ours = DecisionTransformerModel(DecisionTransformerConfig(**SMALL), dtype="float64", seed=4)
    parity.perturb_layernorms(ours)
    ours.save_pretrained(tmp_path)
    ref = hf.DecisionTransformerModel.from_pretrained(tmp_path, dtype=torch.float64)
    assert ref.config.discrete_actions is True and ref.config.action_tanh is False  # an unknown key, kept
    assert len(ref.predict_action) == 1  # a Linear, no Tanh: logits
    a, b, real = logits_both(ours, ref, torch)
    assert rel_error(a[real], b[real]) <= 1e-9


def test_transformers_checkpoint_loads_in_minidt_as_a_discrete_model(hf, torch, tmp_path):
    torch.manual_seed(5)
    ref = hf.DecisionTransformerModel(hf.DecisionTransformerConfig(**SMALL, action_tanh=False)).to(torch.float64)
    ref.save_pretrained(tmp_path)
    ours = DecisionTransformerModel.from_pretrained(tmp_path, dtype="float64")
    assert ours.config.discrete_actions is True and ours.config.action_tanh is False
    a, b, real = logits_both(ours, ref, torch)
    assert rel_error(a[real], b[real]) <= 1e-9
    # get_action: the logits at the last state token
    x = parity.make_inputs(ours.config, 3, 6, seed=3)
    assert rel_error(to_numpy(ours.get_action(**x)), b[:, -1]) <= 1e-9
    # transformers' own default, action_tanh true, contradicts discrete_actions: refused, naming the field
    hf.DecisionTransformerConfig(**SMALL).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="action_tanh: expected false with discrete_actions true"):
        DecisionTransformerModel.from_pretrained(tmp_path)


def test_actions_must_be_one_hot_rows(backend):
    model = DecisionTransformerModel(DecisionTransformerConfig(**SMALL), seed=0)
    x = parity.make_inputs(model.config, 2, 3)
    model(**x)
    x["actions"][0, 0] = 0.0  # all zeros: padding or a rollout's placeholder, allowed
    model(**x)
    for bad, says in (([0, 1, 1, 0], r"\[0.0, 1.0, 1.0, 0.0\] at index \(0, 1\)"),
                      ([0, 0.5, 0, 0], r"\[0.0, 0.5, 0.0, 0.0\] at index \(0, 1\)")):
        x["actions"][0, 1] = bad
        with pytest.raises(ValueError, match=f"^actions: expected one-hot rows .*got {says}"):
            model(**x)
    with pytest.raises(ValueError, match=r"^actions: expected one-hot rows of shape \(2, 3, 4\) .*np.eye\(4\)\[ids\]"):
        model(**{**x, "actions": np.zeros((2, 3), np.int64)})  # ids, not one-hots
