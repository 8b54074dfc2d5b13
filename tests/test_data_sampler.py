"""The K-segment sampler: exact arrays on a hand-made dataset, agreement with a literal port of the reference
repo's get_batch, sampling statistics, and seeded reproducibility / resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from minidt.data import Episode, SegmentSampler, TrajectoryDataset


def episode(obs, act, rew) -> Episode:
    T = len(rew)
    term = np.zeros(T, bool)
    term[-1] = True
    return Episode(np.array(obs, float), np.array(act, float), np.array(rew, float), term, np.zeros(T, bool))


@pytest.fixture
def tiny() -> TrajectoryDataset:
    # column 0 is 0, 2, ..., 14 (mean 7, std sqrt 21); column 1 is 1,1,3,3,5,5,7,7 (mean 4, std sqrt 5)
    ep0 = episode([[0, 1], [2, 1], [4, 3]], [[0.5], [-0.5], [1.0]], [1, 2, 3])
    ep1 = episode([[6, 3], [8, 5], [10, 5], [12, 7], [14, 7]], [[0.1], [0.2], [0.3], [0.4], [0.5]],
                  [10, 20, 30, 40, 50])
    return TrajectoryDataset([ep0, ep1], scale=10.0)


def test_statistics_of_tiny(tiny):
    np.testing.assert_allclose(tiny.state_mean, [7, 4])
    np.testing.assert_allclose(tiny.state_std, [np.sqrt(21) + 1e-6, np.sqrt(5) + 1e-6], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(tiny.lengths, [3, 5])
    np.testing.assert_array_equal(tiny.returns, [6, 150])


def test_exact_segments(tiny):
    """K = 4, max_ep_len = 4. Rows: (episode 0, start 1): two real steps; (1, 0): no padding; (1, 2): three real
    steps, the last at t = 4 clipped to 3; (0, 0): the whole 3-step episode."""
    s = SegmentSampler(tiny, K=4, max_ep_len=4)
    b = s.gather(np.array([0, 1, 1, 0]), np.array([1, 0, 2, 0]))
    sd = np.array([np.sqrt(21) + 1e-6, np.sqrt(5) + 1e-6])
    z = lambda *x: (np.array(x, float) - [7, 4]) / sd  # noqa: E731  normalized state
    pad = z(0, 0)  # the zero state, normalized like the others (the reference pads before normalizing)
    expected_states = np.array([
        [pad, pad, z(2, 1), z(4, 3)],
        [z(6, 3), z(8, 5), z(10, 5), z(12, 7)],
        [pad, z(10, 5), z(12, 7), z(14, 7)],
        [pad, z(0, 1), z(2, 1), z(4, 3)],
    ])
    np.testing.assert_allclose(b["states"], expected_states, rtol=1e-6)
    np.testing.assert_allclose(b["actions"][..., 0], [[-10, -10, -0.5, 1.0], [0.1, 0.2, 0.3, 0.4],
                                                      [-10, 0.3, 0.4, 0.5], [-10, 0.5, -0.5, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(b["rewards"][..., 0], [[0, 0, 2, 3], [10, 20, 30, 40], [0, 30, 40, 50],
                                                         [0, 1, 2, 3]])
    # returns-to-go of episode 0: 6, 5, 3; of episode 1: 150, 140, 120, 90, 50; divided by scale 10
    np.testing.assert_allclose(b["returns_to_go"][..., 0], [[0, 0, 0.5, 0.3], [15, 14, 12, 9], [0, 12, 9, 5],
                                                            [0, 0.6, 0.5, 0.3]], rtol=1e-6)
    np.testing.assert_array_equal(b["timesteps"], [[0, 0, 1, 2], [0, 1, 2, 3], [0, 2, 3, 3], [0, 0, 1, 2]])
    np.testing.assert_array_equal(b["attention_mask"], [[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]])


def test_dtypes_and_shapes(tiny):
    b = SegmentSampler(tiny, K=6, seed=1).sample(7)
    shapes = {"states": (7, 6, 2), "actions": (7, 6, 1), "rewards": (7, 6, 1), "returns_to_go": (7, 6, 1),
              "timesteps": (7, 6), "attention_mask": (7, 6)}
    assert {k: v.shape for k, v in b.items()} == shapes
    assert all(b[k].dtype == np.float32 for k in shapes if k != "timesteps")
    assert b["timesteps"].dtype == np.int64
    # K = 6 is longer than every episode: every row is left-padded, the last slot always real
    assert (b["attention_mask"][:, 0] == 0).all() and (b["attention_mask"][:, -1] == 1).all()


def reference_get_batch(trajectories, state_mean, state_std, scale, max_len, max_ep_len, ep, si):
    """decision-transformer gym/experiment.py get_batch for given (episode, start) rows, copied loop for loop
    (returns-to-go: its K + 1 entries, of which the trainer feeds the first K)."""
    def discount_cumsum(x, gamma):
        out = np.zeros_like(x)
        out[-1] = x[-1]
        for t in reversed(range(x.shape[0] - 1)):
            out[t] = x[t] + gamma * out[t + 1]
        return out

    state_dim, act_dim = trajectories[0]["observations"].shape[1], trajectories[0]["actions"].shape[1]
    s, a, r, rtg, timesteps, mask = [], [], [], [], [], []
    for i, start in zip(ep, si, strict=True):
        traj = trajectories[i]
        s.append(traj["observations"][start:start + max_len].reshape(1, -1, state_dim))
        a.append(traj["actions"][start:start + max_len].reshape(1, -1, act_dim))
        r.append(traj["rewards"][start:start + max_len].reshape(1, -1, 1))
        timesteps.append(np.arange(start, start + s[-1].shape[1]).reshape(1, -1))
        timesteps[-1][timesteps[-1] >= max_ep_len] = max_ep_len - 1
        rtg.append(discount_cumsum(traj["rewards"][start:], gamma=1.)[:s[-1].shape[1] + 1].reshape(1, -1, 1))
        if rtg[-1].shape[1] <= s[-1].shape[1]:
            rtg[-1] = np.concatenate([rtg[-1], np.zeros((1, 1, 1))], axis=1)
        tlen = s[-1].shape[1]
        s[-1] = np.concatenate([np.zeros((1, max_len - tlen, state_dim)), s[-1]], axis=1)
        s[-1] = (s[-1] - state_mean) / state_std
        a[-1] = np.concatenate([np.ones((1, max_len - tlen, act_dim)) * -10., a[-1]], axis=1)
        r[-1] = np.concatenate([np.zeros((1, max_len - tlen, 1)), r[-1]], axis=1)
        rtg[-1] = np.concatenate([np.zeros((1, max_len - tlen, 1)), rtg[-1]], axis=1) / scale
        timesteps[-1] = np.concatenate([np.zeros((1, max_len - tlen)), timesteps[-1]], axis=1)
        mask.append(np.concatenate([np.zeros((1, max_len - tlen)), np.ones((1, tlen))], axis=1))
    cat = np.concatenate
    return dict(states=cat(s), actions=cat(a), rewards=cat(r), returns_to_go=cat(rtg)[:, :-1],
                timesteps=cat(timesteps), attention_mask=cat(mask))


@pytest.mark.parametrize("K,max_ep_len", [(1, 100), (5, 100), (20, 12)])
def test_matches_reference_get_batch(K, max_ep_len):
    rng = np.random.default_rng(0)
    eps = [episode(rng.normal(size=(T, 3)) * 5 + 2, rng.uniform(-1, 1, size=(T, 2)), rng.normal(size=T))
           for T in (1, 2, 7, 15, 30)]
    data = TrajectoryDataset(eps, scale=7.0)
    s = SegmentSampler(data, K=K, max_ep_len=max_ep_len, seed=3)
    ep, si = s.draw(200)
    trajs = [dict(observations=e.observations.astype(np.float64), actions=e.actions.astype(np.float64),
                  rewards=e.rewards) for e in eps]
    ref = reference_get_batch(trajs, data.state_mean, data.state_std, data.scale, K, max_ep_len, ep, si)
    ours = s.gather(ep, si)
    for key, value in ref.items():
        np.testing.assert_allclose(ours[key][..., 0] if value.ndim < ours[key].ndim else ours[key], value,
                                   rtol=2e-6, atol=1e-6, err_msg=key)


def test_episodes_drawn_proportional_to_length():
    lengths = [1, 3, 6, 10]
    data = TrajectoryDataset([episode(np.zeros((T, 1)), np.zeros((T, 1)), np.zeros(T)) for T in lengths])
    n = 40_000
    ep, start = SegmentSampler(data, K=2, seed=0).draw(n)
    expected = n * np.array(lengths) / sum(lengths)
    chi2 = float(np.sum((np.bincount(ep, minlength=4) - expected) ** 2 / expected))
    assert chi2 < 16.3, chi2  # 3 degrees of freedom: P(chi2 > 16.3) = 0.001
    # the start is uniform over the episode's steps: every step of the 10-step episode equally likely
    counts = np.bincount(start[ep == 3], minlength=10)
    expected10 = counts.sum() / 10
    assert float(np.sum((counts - expected10) ** 2 / expected10)) < 27.9  # 9 dof, P = 0.001
    assert (start < np.array(lengths)[ep]).all() and (start >= 0).all()


def test_seeded_reproducibility(tiny):
    a, b, c = (SegmentSampler(tiny, K=3, seed=s) for s in (5, 5, 6))
    for _ in range(3):
        ba, bb = a.sample(16), b.sample(16)
        for k in ba:
            np.testing.assert_array_equal(ba[k], bb[k])
    assert any((a.sample(16)[k] != c.sample(16)[k]).any() for k in ba)


def test_get_state_set_state_resumes_exactly(tiny):
    s = SegmentSampler(tiny, K=3, seed=11)
    for _ in range(4):
        s.sample(8)
    state = json.loads(json.dumps(s.get_state()))  # it goes into a JSON checkpoint
    expected = [s.sample(8) for _ in range(3)]
    resumed = SegmentSampler(tiny, K=3, seed=999)
    resumed.set_state(state)
    for e in expected:
        got = resumed.sample(8)
        for k in e:
            np.testing.assert_array_equal(got[k], e[k])


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="K >= 1"):
        SegmentSampler(tiny, K=0)


def test_discrete_actions_are_one_hot_rows_padded_with_zeros():
    eye = np.eye(3)
    ep0 = episode([[0.0], [1.0]], eye[[2, 0]], [0, 1])
    ep1 = episode([[2.0], [3.0], [4.0]], eye[[1, 1, 2]], [0, 0, 0])
    data = TrajectoryDataset([ep0, ep1], discrete_actions=True)
    batch = SegmentSampler(data, K=3, max_ep_len=4).gather(np.array([0, 1]), np.array([0, 1]))
    np.testing.assert_array_equal(batch["actions"], [[[0, 0, 0], [0, 0, 1], [1, 0, 0]],
                                                     [[0, 0, 0], [0, 1, 0], [0, 0, 1]]])
    with pytest.raises(ValueError, match="episode 1: expected one-hot actions"):
        TrajectoryDataset([ep0, episode([[0.0]], [[0.5, 0.5, 0.0]], [1])], discrete_actions=True)
