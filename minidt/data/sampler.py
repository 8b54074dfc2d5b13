"""The paper's K-segment sampler: the reference repo's gym/experiment.py `get_batch`, vectorized and seeded.

One batch row:
    episode i   drawn with probability T_i / sum_j T_j    (each *timestep* of the data equally likely to start a row)
    start si    uniform in [0, T_i - 1]
    rows        si .. si + tlen - 1, tlen = min(K, T_i - si), placed at the RIGHT end of the K slots; the first
                K - tlen slots are padding (LEFT padding: the newest token is always the last one)

What each slot holds (float32 unless noted):
    states          (s - state_mean) / state_std;  padding: the zero state normalized like the others, i.e.
                    -state_mean / state_std (the reference pads with 0 *before* normalizing)
    actions         a;            padding -10 (the reference's value: far outside any action box); discrete
                                  actions are one-hot rows, padding all zeros (no action)
    rewards         r;            padding 0
    returns_to_go   R_t / scale;  padding 0. R_t is the return from the row's own timestep, so row k's return
                    sits with row k's state (the reference takes K + 1 entries and the trainer drops the last)
    timesteps       t, clipped to max_ep_len - 1 (int64); padding 0
    attention_mask  1 real, 0 padding
Padded values never reach a real token's output (keys are masked) and are excluded from the loss by the mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .trajectories import TrajectoryDataset

PAD_ACTION = -10.0


class SegmentSampler:
    """Batches of K-step segments from a TrajectoryDataset, reproducible from `seed` and resumable through
    get_state / set_state.

    max_ep_len: the model's timestep-embedding size (config.max_ep_len); timesteps are clipped below it.
    The reference repo uses 1000 for its gym tasks."""

    def __init__(self, dataset: TrajectoryDataset, K: int, *, max_ep_len: int = 1000, seed: int = 0):
        if K < 1 or max_ep_len < 1:
            raise ValueError(f"sampler: expected K >= 1 and max_ep_len >= 1, got K={K}, max_ep_len={max_ep_len}")
        self.K, self.max_ep_len = K, max_ep_len
        self.scale = dataset.scale
        self.pad_action = 0.0 if dataset.discrete_actions else PAD_ACTION
        self.state_mean, self.state_std = dataset.state_mean, dataset.state_std
        # Every episode laid end to end once, so a batch is a single fancy-indexing gather.
        self.lengths = dataset.lengths  # N
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])  # N  first flat row of each episode
        self.p = self.lengths / self.lengths.sum()  # N  proportional to length
        self.observations = np.concatenate([e.observations for e in dataset])  # sum T, state_dim
        self.actions = np.concatenate([e.actions for e in dataset])  # sum T, act_dim
        self.rewards = np.concatenate([e.rewards for e in dataset])  # sum T
        self.rtg = np.concatenate([e.returns_to_go for e in dataset])  # sum T  per episode, from each step on
        self.rng = np.random.default_rng(seed)

    def draw(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """-> episode (B,) int64, start (B,) int64: which episode each row comes from and its first timestep."""
        episode = self.rng.choice(len(self.lengths), size=batch_size, p=self.p)  # B
        start = self.rng.integers(0, self.lengths[episode])  # B  uniform in [0, T_i - 1]
        return episode.astype(np.int64), start.astype(np.int64)

    def gather(self, episode: np.ndarray, start: np.ndarray) -> dict[str, np.ndarray]:
        """The batch for given rows (deterministic; see the module docstring). episode, start (B,) ->
        states (B,K,state_dim), actions (B,K,act_dim), rewards (B,K,1), returns_to_go (B,K,1) float32,
        timesteps (B,K) int64, attention_mask (B,K) float32: the keyword arguments of the model's forward."""
        episode, start = np.asarray(episode, dtype=np.int64), np.asarray(start, dtype=np.int64)
        K = self.K
        tlen = np.minimum(K, self.lengths[episode] - start)  # B  real rows in each segment
        k = np.arange(K)  # K  slot index
        real = k[None, :] >= (K - tlen)[:, None]  # B,K  left padding: the real rows are the last tlen slots
        t = start[:, None] + k[None, :] - (K - tlen)[:, None]  # B,K  the timestep in slot k (< start: padding)
        flat = self.offsets[episode][:, None] + np.where(real, t, 0)  # B,K  any in-range row will do for padding
        pad_state = (0.0 - self.state_mean) / self.state_std  # state_dim
        states = np.where(real[..., None], (self.observations[flat] - self.state_mean) / self.state_std, pad_state)
        actions = np.where(real[..., None], self.actions[flat], self.pad_action)
        rewards = np.where(real, self.rewards[flat], 0.0)
        returns_to_go = np.where(real, self.rtg[flat], 0.0) / self.scale
        timesteps = np.where(real, np.minimum(t, self.max_ep_len - 1), 0)  # the embedding table ends there
        return {
            "states": states.astype(np.float32),  # B,K,state_dim
            "actions": actions.astype(np.float32),  # B,K,act_dim
            "rewards": rewards[..., None].astype(np.float32),  # B,K,1
            "returns_to_go": returns_to_go[..., None].astype(np.float32),  # B,K,1
            "timesteps": timesteps.astype(np.int64),  # B,K
            "attention_mask": real.astype(np.float32),  # B,K
        }

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """A random batch of batch_size segments: gather(*draw(batch_size))."""
        return self.gather(*self.draw(batch_size))

    def get_state(self) -> dict[str, Any]:
        """The random generator's state, JSON-able: save it with a checkpoint."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue exactly where get_state() was taken."""
        self.rng.bit_generator.state = state
