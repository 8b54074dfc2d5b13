"""td3bc/rollout.py: the actor's plain rollouts, all episodes in one vector env, equal to a one-environment loop;
episodes end at their first termination or truncation; seeded."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from minidt import no_grad
from minidt.backend import Generator
from minidt.td3bc import Actor
from minidt.td3bc.rollout import rollout_actor


class Stops(gym.Env):
    """Terminates after 2 + (reset seed % 4) steps, or truncates at 5 (TimeLimit). Reward: the action."""

    observation_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 3.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length = 0, 2 + (0 if seed is None else seed % 4)
        return self.np_random.normal(size=2).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t, action[0]], np.float32), float(action[0]), self.t >= self.length, False, {}


gym.register("MinidtTD3BCStops-v0", entry_point=Stops, max_episode_steps=5)


def one_at_a_time(actor, env_id, episodes, mean, std, seed):
    returns, lengths = [], []
    for j in range(episodes):
        env = gym.make(env_id)
        obs, _ = env.reset(seed=seed + j)
        total, n, done = 0.0, 0, False
        while not done:
            with no_grad():
                a = actor(((obs - mean) / std)[None].astype(np.float32))[0]
            obs, r, terminated, truncated, _ = env.step(a)
            total, n, done = total + r, n + 1, terminated or truncated
        returns.append(total)
        lengths.append(n)
    return returns, lengths


def test_vectorized_equals_one_environment_at_a_time():
    for env_id, S, low, high in (("Pendulum-v1", 3, [-2.0], [2.0]), ("MinidtTD3BCStops-v0", 2, [-1.0], [3.0])):
        actor = Actor(S, 1, low, high, 16, gen=Generator(0))
        mean, std = np.full(S, 0.1), np.full(S, 2.0)
        out = rollout_actor(actor, env_id, 6, mean, std, seed=3)
        returns, lengths = one_at_a_time(actor, env_id, 6, mean, std, 3)
        np.testing.assert_allclose(out["returns"], returns, rtol=1e-5)
        assert out["length_mean"] == np.mean(lengths) and out["episodes"] == 6
        assert out["return_mean"] == np.mean(out["returns"]) and len(set(out["returns"])) > 1
    assert sorted(set(lengths)) == [2, 3, 4, 5]  # terminated at 2-5 steps; seed 6 would be cut by the time limit


def test_rollout_on_a_device_backend(device_backend):
    actor = Actor(3, 1, [-2.0], [2.0], 8, gen=Generator(0, "numpy"), backend="numpy")
    want = rollout_actor(actor, "Pendulum-v1", 2, np.zeros(3), np.ones(3), seed=1, max_steps=20)
    actor.to(device_backend)
    got = rollout_actor(actor, "Pendulum-v1", 2, np.zeros(3), np.ones(3), seed=1, max_steps=20)
    np.testing.assert_allclose(got["returns"], want["returns"], rtol=1e-5)
    assert got["length_mean"] == 20
