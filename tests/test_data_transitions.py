"""data/transitions.py: (s, a, r, s', not_done) from episodes, the paper's state normalization, uniform seeded
sampling that resumes exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from minidt.data import Episode, TrajectoryDataset
from minidt.data.transitions import STD_EPS, TransitionSampler


def episode(T: int, start: float, terminated: bool) -> Episode:
    """States start, start + 1, ... in the first dimension and 7 in the second (a constant one)."""
    obs = np.stack([start + np.arange(T), np.full(T, 7.0)], axis=1)
    end = np.zeros(T, bool)
    end[-1] = True
    return Episode(obs, np.arange(T, dtype=float)[:, None] / 10, np.arange(T) + start, end & terminated,
                   end & ~terminated)


def dataset() -> TrajectoryDataset:
    return TrajectoryDataset([episode(3, 0.0, True), episode(1, 10.0, False), episode(2, 20.0, False)])


def test_transitions_by_hand():
    """s' is the next row within an episode; each episode's last step is kept with not_done 0, terminated or
    truncated (its s' is never used); states normalized with std + 1e-3, the second (constant) dimension to 0."""
    ts = TransitionSampler(dataset())
    raw = np.array([0.0, 1, 2, 10, 20, 21])
    mean, std = raw.mean(), raw.std() + STD_EPS
    np.testing.assert_allclose(ts.state_mean, [mean, 7.0])
    np.testing.assert_allclose(ts.state_std, [std, STD_EPS])
    np.testing.assert_allclose(ts.states[:, 0], (raw - mean) / std, rtol=1e-6)
    assert not ts.states[:, 1].any()
    assert len(ts) == 6
    np.testing.assert_array_equal(ts.not_done[:, 0], [1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(ts.next_states[[0, 1, 4]], ts.states[[1, 2, 5]])
    np.testing.assert_array_equal(ts.rewards[:, 0], [0, 1, 2, 10, 20, 21])
    np.testing.assert_allclose(ts.actions[:, 0], [0, 0.1, 0.2, 0, 0, 0.1], rtol=1e-6)
    batch = ts.gather(np.array([1, 3]))
    assert {k: v.shape for k, v in batch.items()} == {"states": (2, 2), "actions": (2, 1), "rewards": (2, 1),
                                                      "next_states": (2, 2), "not_done": (2, 1)}
    assert all(v.dtype == np.float32 for v in batch.values())


@given(st.lists(st.integers(1, 6), min_size=1, max_size=5), st.integers(0, 2**32 - 1))
def test_every_step_is_a_transition_and_bootstraps_only_inside_its_episode(lengths, seed):
    rng = np.random.default_rng(seed)
    eps = [Episode(rng.normal(size=(T, 2)), rng.normal(size=(T, 1)), rng.normal(size=T), np.zeros(T, bool),
                   np.zeros(T, bool)) for T in lengths]
    ts = TransitionSampler(TrajectoryDataset(eps))
    assert len(ts) == sum(lengths) and ts.not_done.sum() == sum(lengths) - len(lengths)
    i = 0
    for e in eps:
        for t in range(len(e)):
            np.testing.assert_allclose(ts.states[i] * ts.state_std + ts.state_mean, e.observations[t], atol=1e-5)
            assert ts.rewards[i, 0] == np.float32(e.rewards[t])
            if t + 1 < len(e):
                np.testing.assert_array_equal(ts.next_states[i], ts.states[i + 1])
            i += 1


def test_sampling_is_uniform_seeded_and_resumes_exactly():
    ts, again = TransitionSampler(dataset(), seed=4), TransitionSampler(dataset(), seed=4)
    for _ in range(3):
        a, b = ts.sample(5), again.sample(5)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    state = ts.get_state()
    want = [ts.sample(7) for _ in range(2)]
    other = TransitionSampler(dataset(), seed=99)
    other.set_state(state)
    got = [other.sample(7) for _ in range(2)]
    assert all(np.array_equal(w[k], g[k]) for w, g in zip(want, got) for k in w)
    counts = np.bincount(np.random.default_rng([0, 2]).integers(0, 6, 60000), minlength=6)
    draws = TransitionSampler(dataset(), seed=0).sample(60000)["rewards"][:, 0]
    np.testing.assert_array_equal(np.unique(draws, return_counts=True)[1], counts)  # uniform over the 6 rows
    assert counts.min() > 9500
