"""Return-conditioned evaluation: the vectorized rollout equals the plain one-environment loop, episodes end at
their first termination or truncation (NEXT_STEP autoreset), returns-to-go are decremented by reward / scale."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from minidt import DecisionTransformerModel
from minidt.evaluate import Preprocess, add_normalized_scores, context, rollout, rollout_sequential


class EndsEarly(gym.Env):
    """Terminates after 3 + (reset seed % 5) steps, or truncates at 9 (TimeLimit): episodes of different lengths
    within one vector env, so autoreset handling is exercised. Reward = the action's first entry + 1."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length = 0, 3 + (0 if seed is None else seed % 5)
        return self.np_random.normal(size=2).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = np.array([self.t, float(action[0])], np.float32)
        return obs, float(action[0]) + 1.0, self.t >= self.length, False, {}


gym.register("MinidtEndsEarly-v0", entry_point=EndsEarly, max_episode_steps=9)


def small_model(state_dim: int, dtype: str = "float64", backend=None) -> DecisionTransformerModel:
    return DecisionTransformerModel(state_dim=state_dim, act_dim=1, hidden_size=16, n_layer=1, n_head=2,
                                    max_ep_len=200, action_tanh=True, initializer_range=0.5, dtype=dtype,
                                    backend=backend, seed=0)


def pendulum_pre() -> Preprocess:
    return Preprocess(np.zeros(3), np.ones(3), 100.0, np.array([-2.0]), np.array([2.0]))


def test_vectorized_equals_sequential_pendulum():
    model, pre = small_model(3), pendulum_pre()
    kw = dict(targets=[-500.0, -100.0], episodes=3, pre=pre, K=4, seed=7, max_steps=25)
    fast = rollout(model, "Pendulum-v1", **kw)
    slow = rollout_sequential(model, "Pendulum-v1", **kw)
    for f, s in zip(fast, slow):
        np.testing.assert_allclose(f["returns"], s["returns"], rtol=1e-12)
        assert f["length_mean"] == s["length_mean"] == 25
    # the two targets differ only in the return asked for: same seeds, different actions
    assert fast[0]["returns"] != fast[1]["returns"]


def test_vectorized_equals_sequential_with_early_termination():
    model = small_model(2)
    pre = Preprocess(np.zeros(2), np.ones(2), 10.0, np.array([-2.0]), np.array([2.0]))
    kw = dict(targets=[1.0, 5.0, 9.0], episodes=5, pre=pre, K=3, seed=0)
    fast = rollout(model, "MinidtEndsEarly-v0", **kw)
    slow = rollout_sequential(model, "MinidtEndsEarly-v0", **kw)
    for f, s in zip(fast, slow):
        np.testing.assert_allclose(f["returns"], s["returns"], rtol=1e-12)
        assert f["length_mean"] == s["length_mean"] == np.mean([3 + j % 5 for j in range(5)])


def test_returns_to_go_are_decremented_by_reward_over_scale(monkeypatch):
    """Record what the model sees: R_{t+1} = R_t - r_t / scale; the window slides; left padding while t + 1 < K."""
    model = small_model(2)
    pre = Preprocess(np.zeros(2), np.ones(2), 10.0, np.array([-2.0]), np.array([2.0]))
    seen = []
    get_action = model.get_action

    def spy(**batch):
        seen.append({k: None if v is None else np.array(v) for k, v in batch.items()})
        return get_action(**batch)

    monkeypatch.setattr(model, "get_action", spy)
    out = rollout(model, "MinidtEndsEarly-v0", [4.0], 1, pre, K=2, seed=0)  # seed 0: a 3-step episode
    assert out[0]["length_mean"] == 3 and len(seen) == 3
    assert seen[0]["attention_mask"].tolist() == [[0.0, 1.0]]  # t = 0, K = 2: one padded step
    assert seen[0]["timesteps"].tolist() == [[0, 0]] and seen[2]["timesteps"].tolist() == [[1, 2]]
    rtg = [seen[0]["returns_to_go"][0, -1, 0]] + [b["returns_to_go"][0, -1, 0] for b in seen[1:]]
    taken = [float(seen[t + 1]["actions"][0, -2, 0]) for t in range(2)]  # a_t, as fed back at step t + 1
    rewards = [2 * float(np.clip(a, -1, 1)) + 1 for a in taken]  # env action 2a; EndsEarly pays action + 1
    assert rtg[0] == pytest.approx(0.4)
    for t in range(2):
        assert rtg[t + 1] == pytest.approx(rtg[t] - rewards[t] / 10.0, rel=1e-5)
    assert seen[2]["returns_to_go"][0, 0, 0] == rtg[1]  # the window slid by one
    assert sum(rewards) == pytest.approx(out[0]["return_mean"] - (2 * float(np.clip(
        np.array(get_action(**seen[2]))[0, 0], -1, 1)) + 1), rel=1e-5)


def test_context_left_pads():
    states = np.arange(2 * 6 * 3, dtype=np.float32).reshape(2, 6, 3)
    actions = np.ones((2, 6, 1), np.float32)
    rtg = np.arange(12, dtype=np.float32).reshape(2, 6)
    c = context(states, actions, rtg, t=1, K=4)
    assert c["states"].shape == (2, 4, 3) and c["returns_to_go"].shape == (2, 4, 1)
    assert c["attention_mask"].tolist() == [[0, 0, 1, 1]] * 2
    assert c["timesteps"].tolist() == [[0, 0, 0, 1]] * 2
    np.testing.assert_array_equal(c["states"][:, 2:], states[:, :2])
    assert not c["states"][:, :2].any()
    c = context(states, actions, rtg, t=5, K=4)
    assert c["timesteps"].tolist() == [[2, 3, 4, 5]] * 2 and c["attention_mask"].all()


def test_preprocess_actions_round_trip():
    pre = Preprocess(np.zeros(2), np.ones(2), 1.0, np.array([-2.0, 0.0]), np.array([2.0, 1.0]))
    a = np.array([[-2.0, 0.0], [1.0, 0.5], [2.0, 1.0]])
    n = pre.normalize_actions(a)
    np.testing.assert_allclose(n, [[-1, -1], [0.5, 0], [1, 1]])
    np.testing.assert_allclose(pre.env_actions(n), a)
    np.testing.assert_allclose(pre.env_actions(np.array([[5.0, -5.0]])), [[2.0, 0.0]])  # clipped to the box
    back = Preprocess.from_dict(pre.to_dict())
    for k in vars(pre):
        np.testing.assert_array_equal(getattr(back, k), getattr(pre, k))


def test_normalized_scores():
    results = [{"returns": [-1233.246343, -157.123775]}]
    add_normalized_scores(results, lambda r: 100 * (r + 1233.246343) / (1233.246343 - 157.123775))
    assert results[0]["normalized_score_mean"] == pytest.approx(50.0)


def test_rollout_on_a_device_backend(device_backend):
    """The evaluation loop keeps host (gymnasium) and device (model) arrays apart: the device's run gives the
    NumPy run's returns."""
    pre = pendulum_pre()
    host = rollout(small_model(3, backend="numpy"), "Pendulum-v1", [-300.0], 2, pre, K=3, seed=1, max_steps=6)
    dev = rollout(small_model(3, backend=device_backend), "Pendulum-v1", [-300.0], 2, pre, K=3, seed=1, max_steps=6)
    np.testing.assert_allclose(dev[0]["returns"], host[0]["returns"], rtol=1e-12)


# --- discrete actions, temperature, behaviour cloning ------------------------------------------------------------

def cartpole_model() -> DecisionTransformerModel:
    return DecisionTransformerModel(state_dim=4, act_dim=2, hidden_size=16, n_layer=1, n_head=2, max_ep_len=500,
                                    discrete_actions=True, initializer_range=0.5, dtype="float64", seed=0)


def cartpole_pre(zero_returns: bool = False) -> Preprocess:
    return Preprocess(np.zeros(4), np.full(4, 0.5), 100.0, np.zeros(0), np.zeros(0), zero_returns)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_vectorized_equals_sequential_discrete(temperature):
    """Argmax, and sampling: episode j draws from a stream seeded seed + j in both loops."""
    model = cartpole_model()
    kw = dict(targets=[20.0, 200.0], episodes=3, pre=cartpole_pre(), K=4, seed=3, max_steps=40,
              temperature=temperature)
    fast = rollout(model, "CartPole-v1", **kw)
    slow = rollout_sequential(model, "CartPole-v1", **kw)
    for f, s in zip(fast, slow):
        assert f["returns"] == s["returns"] and f["length_mean"] == s["length_mean"]
    again = rollout(model, "CartPole-v1", **kw)
    assert again == fast  # the same seed, the same episodes


def test_choose_argmax_and_sampling_frequencies():
    from minidt.evaluate import choose

    logits = np.log(np.array([[0.2, 0.5, 0.3], [1.0, 1e-12, 1e-12]]))
    assert choose(logits, 0.0, []).tolist() == [1, 0]
    rngs = [np.random.default_rng(0), np.random.default_rng(1)]
    draws = np.array([choose(logits, 1.0, rngs) for _ in range(4000)])
    np.testing.assert_allclose(np.bincount(draws[:, 0], minlength=3) / 4000, [0.2, 0.5, 0.3], atol=0.03)
    assert (draws[:, 1] == 0).all()
    hot = np.array([choose(logits, 100.0, rngs)[0] for _ in range(3000)])  # a high temperature: nearly uniform
    np.testing.assert_allclose(np.bincount(hot, minlength=3) / 3000, [1 / 3] * 3, atol=0.04)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), True, "1"])
def test_bad_temperatures_are_refused(bad):
    with pytest.raises(ValueError, match=r"^temperature: expected a finite number >= 0 \(0: argmax\), got"):
        rollout(cartpole_model(), "CartPole-v1", [1.0], 1, cartpole_pre(), K=2, temperature=bad)
    with pytest.raises(ValueError, match="^temperature: the model predicts continuous actions"):
        rollout(small_model(3), "Pendulum-v1", [1.0], 1, pendulum_pre(), K=2, temperature=0.5)


def test_behaviour_cloning_sees_a_zero_return_input_and_ignores_the_target(monkeypatch):
    model = cartpole_model()
    seen = []
    get_action = model.get_action

    def spy(**batch):
        seen.append(np.array(batch["returns_to_go"]))
        return get_action(**batch)

    monkeypatch.setattr(model, "get_action", spy)
    kw = dict(episodes=2, pre=cartpole_pre(zero_returns=True), K=3, seed=0, max_steps=30)
    a = rollout(model, "CartPole-v1", [10.0], **kw)
    assert all((r == 0).all() for r in seen) and len(seen) > 1
    b = rollout(model, "CartPole-v1", [400.0], **kw)
    assert a[0]["returns"] == b[0]["returns"]
    seq = rollout_sequential(model, "CartPole-v1", [400.0], **kw)
    assert seq[0]["returns"] == a[0]["returns"]
    assert Preprocess.from_dict(cartpole_pre(True).to_dict()).zero_returns is True
    old = {k: v for k, v in cartpole_pre().to_dict().items() if k != "zero_returns"}  # a run.json from before BC
    assert Preprocess.from_dict(old).zero_returns is False


def test_delayed_rewards_model_keeps_its_return_to_go_at_the_target(monkeypatch):
    """Trained on rewards delayed to the last step, a model saw the episode's whole return at every step; its
    rollouts keep R at the target (the reference's mode 'delayed'), in both loops, and the flag survives run.json."""
    model = cartpole_model()
    seen = []
    get_action = model.get_action

    def spy(**batch):
        seen.append(np.array(batch["returns_to_go"])[..., 0])  # N, K
        return get_action(**batch)

    monkeypatch.setattr(model, "get_action", spy)
    pre = cartpole_pre()
    pre.delayed_rewards = True
    kw = dict(episodes=2, pre=pre, K=3, seed=0, max_steps=30)
    a = rollout(model, "CartPole-v1", [40.0], **kw)
    last = seen[-1]
    assert len(seen) > 3 and np.allclose(last[last != 0], 40.0 / pre.scale)  # 1 a step earned: not subtracted
    assert rollout_sequential(model, "CartPole-v1", [40.0], **kw)[0]["returns"] == a[0]["returns"]
    seen.clear()
    rollout(model, "CartPole-v1", [40.0], **{**kw, "pre": cartpole_pre()})
    assert seen[-1].min() < 40.0 / 100.0 - 0.01  # the usual loop subtracts what was earned
    assert Preprocess.from_dict(pre.to_dict()).delayed_rewards is True
    old = {k: v for k, v in cartpole_pre().to_dict().items() if k != "delayed_rewards"}  # a run.json from before
    assert Preprocess.from_dict(old).delayed_rewards is False
    with pytest.raises(ValueError, match="^delayed_rewards: expected true or false, got 'yes'"):
        Preprocess.from_dict({**old, "delayed_rewards": "yes"})
