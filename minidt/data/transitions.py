"""Single transitions (s, a, r, s', not_done) for TD learning, sampled uniformly: the replay buffer of an offline
TD method (TD3+BC's `ReplayBuffer.convert_D4RL` and `sample`, seeded and resumable).

From an episode of T steps (T observations, trajectories.py): step t gives s = s_t, a = a_t, r = r_t and, for
t < T - 1, s' = s_{t+1} with not_done = 1. The last step has no stored next state. It is kept, with not_done = 0,
whether the episode terminated (the MDP ended: nothing to bootstrap) or was truncated by a time limit. For a
truncated episode that ends the bootstrap one step early; D4RL's `qlearning_dataset` drops that step instead, but
then a reward delayed to the last step (delayed.py) would be dropped with it, and a Pendulum dataset, every episode
of which is cut at 200 steps, would lose all of its delayed rewards. It is 1 transition in 200 there.

States are normalized by the dataset's mean and std, as TD3+BC does (std + 1e-3, the paper's epsilon, which keeps
a constant state dimension from dividing by ~0 at evaluation); actions and rewards stay as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .trajectories import TrajectoryDataset

STD_EPS = 1e-3  # the paper's: states are (s - mean) / (std + 1e-3)


class TransitionSampler:
    """Batches of transitions drawn uniformly with replacement (`np.random.randint(0, size, batch_size)` in the
    paper's code), reproducible from `seed` and resumable through get_state / set_state.

    Arrays (N = the dataset's steps): states, next_states (N, state_dim) float32 normalized; actions (N, act_dim)
    float32; rewards, not_done (N, 1) float32. state_mean, state_std (state_dim,) float64: what evaluation must
    normalize observations with."""

    def __init__(self, dataset: TrajectoryDataset, *, seed: int = 0):
        observations = np.concatenate([e.observations for e in dataset]).astype(np.float64)  # N,state_dim
        self.state_mean = observations.mean(axis=0)
        self.state_std = observations.std(axis=0) + STD_EPS
        last = np.cumsum(dataset.lengths) - 1  # the flat index of each episode's last step
        nxt = np.arange(len(observations)) + 1  # N  s' = the next row ...
        nxt[last] = last  # ... except after an episode's last step: any row will do there, not_done is 0
        states = (observations - self.state_mean) / self.state_std
        self.states = states.astype(np.float32)
        self.next_states = states[nxt].astype(np.float32)
        self.actions = np.concatenate([e.actions for e in dataset]).astype(np.float32)
        self.rewards = np.concatenate([e.rewards for e in dataset]).astype(np.float32)[:, None]
        not_done = np.ones(len(observations), np.float32)
        not_done[last] = 0.0
        self.not_done = not_done[:, None]
        self.rng = np.random.default_rng([seed, 2])  # apart from the weights' and the noise's streams

    def __len__(self) -> int:
        return len(self.states)

    def gather(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """The transitions at these flat indices (B,) -> states (B, state_dim), actions (B, act_dim), rewards
        (B, 1), next_states (B, state_dim), not_done (B, 1): td3bc_step's batch."""
        return {"states": self.states[index], "actions": self.actions[index], "rewards": self.rewards[index],
                "next_states": self.next_states[index], "not_done": self.not_done[index]}

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """A batch of batch_size transitions, each index uniform in [0, N)."""
        return self.gather(self.rng.integers(0, len(self), size=batch_size))

    def get_state(self) -> dict[str, Any]:
        """The random generator's state, JSON-able: save it with a checkpoint."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state
