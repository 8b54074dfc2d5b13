"""Episodes, returns-to-go, dataset statistics and the return scale."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minidt.data import Episode, TrajectoryDataset, env_name, returns_to_go
from minidt.data.envs import default_scale


def ep(T: int, state_dim: int = 2, act_dim: int = 1, reward: float = 1.0) -> Episode:
    return Episode(np.arange(T * state_dim, dtype=float).reshape(T, state_dim), np.zeros((T, act_dim)),
                   np.full(T, reward), np.zeros(T, bool), np.zeros(T, bool))


@given(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=50))
def test_returns_to_go_is_the_sum_of_future_rewards(rewards):
    R = returns_to_go(np.array(rewards))
    assert R.dtype == np.float64 and R.shape == (len(rewards),)
    for t in range(len(rewards)):
        assert R[t] == pytest.approx(sum(rewards[t:]), abs=1e-9)


def test_returns_to_go_by_hand():
    np.testing.assert_array_equal(returns_to_go(np.array([1.0, -2.0, 3.0, 0.5])), [2.5, 1.5, 3.5, 0.5])
    e = Episode(np.zeros((3, 1)), np.zeros((3, 1)), [1, 2, 3], [0, 0, 1], [0, 0, 0])
    np.testing.assert_array_equal(e.returns_to_go, [6, 5, 3])
    assert e.ret == 6 and len(e) == 3


def test_dataset_statistics():
    a = Episode([[1.0, 5.0], [3.0, 5.0]], [[0.0], [0.0]], [1, 1], [0, 1], [0, 0])
    b = Episode([[5.0, 5.0]], [[0.0]], [10], [0], [1])
    d = TrajectoryDataset([a, b], env_id="Pendulum-v1")
    np.testing.assert_allclose(d.state_mean, [3, 5])
    # std over all 3 states, + 1e-6: the constant second dimension gets exactly 1e-6, not 0
    np.testing.assert_allclose(d.state_std, [np.std([1, 3, 5]) + 1e-6, 1e-6], rtol=1e-12)
    np.testing.assert_array_equal(d.lengths, [2, 1])
    np.testing.assert_array_equal(d.returns, [2, 10])
    assert (d.state_dim, d.act_dim, d.num_steps, len(d)) == (2, 1, 3, 2)
    assert d.scale == 1000.0  # Pendulum-v1's entry in RETURN_SCALE
    assert d[1] is b and list(d) == [a, b]
    assert "episodes=2" in repr(d)


def test_scale():
    assert TrajectoryDataset([ep(3)], scale=7).scale == 7.0
    assert TrajectoryDataset([ep(3)], env_id="hopper-medium-v2").scale == 1000.0
    assert TrajectoryDataset([ep(3, reward=150.0)]).scale == 100.0  # unknown env: power of ten below max |R|
    assert TrajectoryDataset([ep(3, reward=0.1)]).scale == 1.0
    assert default_scale(None, np.array([-2500.0, 10.0])) == 1000.0


def test_env_names():
    assert env_name("Pendulum-v1") == env_name("pendulum") == "pendulum"
    assert env_name("MountainCarContinuous-v0") == "mountaincar"
    assert env_name("Hopper-v2") == env_name("hopper-medium-replay-v2") == "hopper"
    assert env_name("Walker2d-v5") == "walker2d" and env_name("HalfCheetah-v4") == "halfcheetah"
    assert env_name("MountainCar-v0") == "mountaincar-discrete" and env_name("CartPole-v1") == "cartpole"
    assert env_name("minidt/KeyToDoor-v0") == env_name("keytodoor") == "keytodoor"
    assert env_name("LunarLander-v3") is None and env_name(None) is None


def test_episode_validation():
    with pytest.raises(ValueError, match="same number|T entries"):
        Episode(np.zeros((3, 2)), np.zeros((2, 1)), np.zeros(3), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="at least one step"):
        Episode(np.zeros((0, 2)), np.zeros((0, 1)), np.zeros(0), np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match=r"\(T, state_dim\)"):
        Episode(np.zeros(3), np.zeros((3, 1)), np.zeros(3), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="same \\(state_dim, act_dim\\)"):
        TrajectoryDataset([ep(2, state_dim=2), ep(2, state_dim=3)])
    with pytest.raises(ValueError, match="at least one episode"):
        TrajectoryDataset([])


@pytest.mark.parametrize("field, value, says", [
    ("observations", np.nan, r"observations: expected finite numbers, got nan at index \(1, 0\)"),
    ("observations", 1e39, "observations: expected finite numbers within float32's range"),
    ("actions", -np.inf, r"actions: expected finite numbers, got -inf at index \(1, 0\)"),
    ("rewards", np.inf, r"rewards: expected finite numbers, got inf at index \(1,\)"),
])
def test_episodes_refuse_nan_and_inf_by_field(field, value, says):
    fields = dict(observations=np.zeros((3, 2)), actions=np.zeros((3, 1)), rewards=np.zeros(3),
                  terminations=np.zeros(3), truncations=np.zeros(3))
    fields[field][1] = value
    with pytest.raises(ValueError, match=f"^{says}"):
        Episode(**fields)
    with pytest.raises(ValueError, match="^terminations: expected real numbers"):
        Episode(**{**fields, field: np.zeros_like(fields[field]), "terminations": np.array(["yes"] * 3)})


def test_top_percent_keeps_the_best_episodes_and_the_whole_datasets_statistics():
    data = TrajectoryDataset([ep(2, reward=float(r)) for r in (3, 9, 1, 7, 5, 0, 8, 2, 6, 4)], scale=10.0)
    assert data.top_percent(30).returns.tolist() == [18.0, 14.0, 16.0]  # the best 3 of 10, in the dataset's order
    top = data.top_percent(25)  # 2.5 episodes: the best 2
    assert top.returns.tolist() == [18.0, 16.0] and top.lengths.tolist() == [2, 2]
    np.testing.assert_array_equal(top.state_mean, data.state_mean)  # normalized as the whole dataset
    assert top.scale == data.scale and top.name == "unnamed, top 25 %" and len(data) == 10
    assert data.top_percent(1).returns.tolist() == [18.0]  # at least the best episode
    assert data.top_percent(100).returns.tolist() == data.returns.tolist()


@given(st.lists(st.integers(0, 1), min_size=1, max_size=40), st.floats(0.01, 100))
def test_top_percent_of_successes_and_failures_is_the_successes(outcomes, percent):
    """Returns 0 or 1 (Key-to-Door): below 100 % it keeps exactly the successful episodes (even when they are more
    than percent %: equal returns are never split); all episodes at 100 % or when all returns are equal."""
    data = TrajectoryDataset([ep(1, reward=float(o)) for o in outcomes])
    top = data.top_percent(percent)
    everything = len(set(outcomes)) == 1 or len(data) <= percent / 100 * len(data) + 1e-9
    assert len(top) == (len(data) if everything else sum(outcomes))
    assert (top.returns == (top.returns.max())).all() or everything


@pytest.mark.parametrize("bad", [0, -5, 101, float("nan"), True, "10"])
def test_top_percent_refuses_what_is_not_a_percentage(bad):
    data = TrajectoryDataset([ep(2), ep(3)])
    with pytest.raises(ValueError, match=r"^top_percent: expected a percentage in \(0, 100\], got"):
        data.top_percent(bad)
