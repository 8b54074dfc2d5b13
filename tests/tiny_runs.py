"""Tiny datasets and runs for the CLI, run-directory and policy tests: a D4RL file of a few real Pendulum-v1
episodes (written in milliseconds: nothing is generated into a cache) and the trainer settings of a model that
trains in a second."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np

from minidt.train import TrainSettings, train


def pendulum_hdf5(path: Path, episodes: int = 4, seed: int = 0) -> Path:
    """A D4RL-format file: `episodes` Pendulum-v1 episodes of uniform random actions (200 steps each)."""
    env = gym.make("Pendulum-v1")
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            a = rng.uniform(-2.0, 2.0, size=1).astype(np.float32)
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
    return replace(s, **overrides)


def tiny_run(run_dir: Path, dataset: Path, **overrides) -> Path:
    train(tiny_settings(dataset, **overrides), run_dir, progress=False)
    return run_dir
