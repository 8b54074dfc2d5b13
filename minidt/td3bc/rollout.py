"""TD3+BC's evaluation: plain rollouts of the actor. It is a Markov policy, a = pi((s - mean) / std), asked for
nothing: there is no target return to condition on, so one evaluation is one number (with its spread), where
Decision Transformer's is a curve over targets.

All episodes run at once in one gymnasium vector env (autoreset NEXT_STEP, as minidt.evaluate.rollout), one actor
forward per step for all of them; episode j is seeded seed + j, so DT's and TD3+BC's evaluations start from the
same initial states; each episode counts until its first termination or truncation.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from ..backend import to_numpy
from ..layers.module import no_grad
from .networks import Actor


@no_grad()
def rollout_actor(actor: Actor, env_id: str, episodes: int, state_mean: Any, state_std: Any, seed: int = 0,
                  max_steps: int | None = None, progress: bool = False) -> dict:
    """Run `episodes` episodes of the actor -> {"return_mean", "return_std", "length_mean", "episodes",
    "returns"}. state_mean, state_std (state_dim,): the normalization the actor was trained with. One
    device-to-host read per environment step (gymnasium needs the actions on the host)."""
    mean, std = np.asarray(state_mean, np.float64), np.asarray(state_std, np.float64)
    b = actor.backend
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(episodes)],
                                    autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    try:
        L = max_steps or envs.envs[0].spec.max_episode_steps or 1000
        obs, _ = envs.reset(seed=[seed + j for j in range(episodes)])
        returns, lengths, alive = np.zeros(episodes), np.zeros(episodes, np.int64), np.ones(episodes, bool)
        steps = range(L)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc=f"evaluate {env_id}", leave=False)
        for _ in steps:
            s = b.asarray((obs - mean) / std, actor.dtype)  # N,state_dim
            action = np.asarray(to_numpy(actor(s)), envs.single_action_space.dtype)  # N,act_dim
            obs, reward, terminated, truncated, _ = envs.step(action)
            returns += np.where(alive, reward, 0.0)
            lengths += alive
            alive &= ~(terminated | truncated)
            if not alive.any():
                break
    finally:
        envs.close()
    return {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
            "length_mean": float(np.mean(lengths)), "episodes": int(episodes),
            "returns": [float(r) for r in returns]}
