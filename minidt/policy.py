"""A trained run as a stateful policy: observation and reward in, action out, one step at a time.

    policy = minidt.load_policy("runs/my-run", target_return=-200)
    obs, _ = env.reset(seed=0)
    action = policy.predict(obs, 0.0)                 # the first step: no reward yet
    obs, reward, terminated, truncated, _ = env.step(action)
    action = policy.predict(obs, reward)              # the reward the previous action earned
    ...
    policy.reset()                                    # before the next episode

It keeps what the rollout keeps (`minidt.evaluate.EpisodeWindow`: the K-step window, the returns-to-go, the
timesteps) and acts exactly as `minidt evaluate RUN --targets R --episodes 1 --seed S` does on the same seed. A
discrete model's action is an action id: its argmax, or sampled at a temperature > 0 from a stream seeded by
`reset(seed=S)` (as `minidt evaluate --temperature T --seed S` samples episode 0).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from .backend import Backend
from .evaluate import EpisodeWindow, check_temperature
from .layers.module import no_grad


class Policy:
    """A return-conditioned Decision Transformer acting in one episode at a time; d3rlpy users know it as
    `algo.as_stateful_wrapper(target_return)` (the same `predict(obs, reward)` and `reset()`).

    model: a DecisionTransformerModel; pre: the run's Preprocess (state normalization, return scale, action
    bounds); K: the context length it was trained with; target_return: the return asked for, in the environment's
    units (a behaviour-cloning run ignores it); temperature: 0 acts by argmax (a discrete model), > 0 samples.
    `predict` runs under minidt.no_grad() in eval mode."""

    def __init__(self, model: Any, pre: Any, K: int, target_return: float, temperature: float = 0.0):
        if not math.isfinite(target_return):
            raise ValueError(f"target_return: expected a finite number, got {target_return}")
        check_temperature(temperature, model.config.discrete_actions)
        self.model, self.pre, self.K, self.target_return = model.eval(), pre, K, float(target_return)
        self.temperature = float(temperature)
        self.seed: int | None = None
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode: the window empties, the return wanted is target_return again, t = 0. seed: the
        seed of the sampling stream (temperature > 0), as `env.reset(seed=...)` takes one; None continues with
        fresh randomness from the previous stream (or from the operating system, the first time)."""
        c = self.model.config
        if seed is not None:
            self.seed = seed
        elif self.temperature:
            self.seed = int(np.random.default_rng(self.seed).integers(2**63))
        self.window = EpisodeWindow([self.target_return], self.pre, self.K, c.max_ep_len, c.state_dim, c.act_dim,
                                    c.discrete_actions, self.temperature, [self.seed])
        self.t = 0

    @no_grad()
    def predict(self, obs: Any, reward: float = 0.0) -> np.ndarray:
        """obs (state_dim,): the environment's observation at step t; reward: what the previous action earned
        (ignored at t = 0). Returns the action (act_dim,) float32, inside the environment's action bounds; a
        discrete model's: an action id (np.int64, what env.step takes)."""
        c = self.model.config
        obs = np.asarray(obs)  # its own dtype, as the vector env of the evaluation keeps it
        if obs.shape != (c.state_dim,) or not np.issubdtype(obs.dtype, np.number):
            raise ValueError(f"obs: expected numbers of shape ({c.state_dim},), got {obs.dtype} {obs.shape}")
        if not np.isfinite(obs).all():
            raise ValueError(f"obs: expected finite numbers, got {obs.tolist()}")
        if not math.isfinite(reward):
            raise ValueError(f"reward: expected a finite number, got {reward}")
        if self.t >= c.max_ep_len:
            raise ValueError(f"predict: the episode is at step {self.t}, the model's max_ep_len; call reset()")
        if self.t > 0:
            self.window.earn(self.t - 1, reward)
        action = self.window.act(self.model, self.t, obs[None])  # 1,act_dim
        self.t += 1
        return action[0]


def load_policy(run_dir: "str | os.PathLike", target_return: float,
                backend: "str | Backend | None" = None, temperature: float = 0.0) -> Policy:
    """A Policy from a run directory written by `minidt train` (its latest model) or one of its
    checkpoints/step-N folders: the run's model, preprocessing and context length. backend: where the model runs
    (default: the process default, numpy unless set); temperature: a discrete model samples its actions at it
    (0, the default: argmax; seed the stream with `policy.reset(seed=S)`)."""
    from .runs import load_run

    info, model = load_run(run_dir, backend)
    return Policy(model, info.pre, info.settings.K, target_return, temperature)
