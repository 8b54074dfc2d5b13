"""Tiny datasets and runs for the CLI, run-directory and policy tests: D4RL files of a few real Pendulum-v1 or
CartPole-v1 episodes (written in milliseconds: nothing is generated into a cache; CartPole's actions are integers,
discrete) and the trainer settings of a model that trains in a second."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np

from minidt.train import TrainSettings, train


def pendulum_hdf5(path: Path, episodes: int = 4, seed: int = 0) -> Path:
    """A D4RL-format file: `episodes` Pendulum-v1 episodes of uniform random actions (200 steps each)."""
    return random_hdf5("Pendulum-v1", path, episodes, seed)


def cartpole_hdf5(path: Path, episodes: int = 6, seed: int = 0) -> Path:
    """A D4RL-format file of CartPole-v1 episodes of uniform random actions, the actions integers 0 and 1."""
    return random_hdf5("CartPole-v1", path, episodes, seed)


def random_hdf5(env_id: str, path: Path, episodes: int, seed: int) -> Path:
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    space = env.action_space
    rows: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            if isinstance(space, gym.spaces.Discrete):
                a = np.int64(rng.integers(space.n))
            else:
                a = rng.uniform(space.low, space.high).astype(np.float32)
            next_obs, r, terminated, truncated, _ = env.step(a)
            for k, v in zip(rows, (obs, a, r, terminated, truncated)):
                rows[k].append(v)
            obs, done = next_obs, terminated or truncated
    env.close()
    with h5py.File(path, "w") as f:
        for k, v in rows.items():
            f[k] = np.asarray(v)
    return path


def tiny_settings(dataset: Path, **overrides) -> TrainSettings:
    s = TrainSettings(env="Pendulum-v1", dataset=str(dataset), steps=2, K=4, batch_size=4, hidden_size=8, n_layer=1,
                      n_head=2, warmup_steps=1, log_every=1, checkpoint_every=1, final_eval_episodes=0, seed=0)
    return TrainSettings(**{**s.__dict__, **overrides})  # checked again, as TrainSettings checks a new one


def tiny_run(run_dir: Path, dataset: Path, **overrides) -> Path:
    train(tiny_settings(dataset, **overrides), run_dir, progress=False)
    return run_dir
