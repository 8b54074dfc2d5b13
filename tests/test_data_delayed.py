"""data/delayed.py: rewards moved to each episode's last step; the return, and so the returns-to-go from the first
step, unchanged; nothing else touched."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from minidt.data import Episode, TrajectoryDataset, load_dataset
from minidt.data.delayed import delay_rewards
from minidt.data.sampler import SegmentSampler


@st.composite
def datasets(draw):
    n = draw(st.integers(1, 4))
    eps = []
    for _ in range(n):
        rewards = draw(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=8))
        T = len(rewards)
        eps.append(Episode(np.arange(T * 2.0).reshape(T, 2), np.ones((T, 1)), rewards, np.zeros(T, bool),
                           np.arange(T) == T - 1))
    return TrajectoryDataset(eps, name="toy", env_id="Pendulum-v1", metadata={"source": "test"})


@given(datasets())
def test_the_return_is_kept_and_sits_on_the_last_step(d):
    before = [e.rewards.copy() for e in d]
    out = delay_rewards(d)
    assert [e.rewards.tolist() for e in d] == [r.tolist() for r in before]  # the original is not changed
    np.testing.assert_array_equal(out.returns, d.returns)  # bit for bit: 0 + ... + 0 + R is R
    for e, o in zip(d, out):
        assert not o.rewards[:-1].any() and o.rewards[-1] == e.ret
        np.testing.assert_array_equal(o.returns_to_go, np.full(len(e), e.ret))  # R at every step
        for name in ("observations", "actions", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(o, name), getattr(e, name))
    assert out.name == "toy-delayed" and out.metadata == {"source": "test", "rewards": "delayed"}
    assert (out.scale, out.env_id) == (d.scale, d.env_id)
    np.testing.assert_array_equal(out.state_mean, d.state_mean)
    twice = delay_rewards(out)
    assert twice.name == "toy-delayed" and all(np.array_equal(a.rewards, b.rewards) for a, b in zip(twice, out))


def test_on_a_generated_dataset_the_sampler_sees_the_return_until_the_end(cache):
    """Pendulum medium-replay, delayed: every segment's returns-to-go are its episode's return / scale."""
    d = delay_rewards(load_dataset("medium-replay", env="pendulum", progress=False))
    assert d.name.endswith("-delayed") and np.count_nonzero(np.concatenate([e.rewards for e in d])) == len(d)
    sampler = SegmentSampler(d, K=5, max_ep_len=200, seed=0)
    episode, start = sampler.draw(64)
    batch = sampler.gather(episode, start)
    real = batch["attention_mask"] > 0
    want = np.broadcast_to((d.returns[episode] / d.scale)[:, None], real.shape)
    np.testing.assert_allclose(batch["returns_to_go"][..., 0][real], want[real], rtol=1e-6)
