"""Normalized scores, D4RL's convention: 100 (R - R_random) / (R_expert - R_random).

0 is a uniform random policy, 100 the expert. For hopper, halfcheetah and walker2d the reference returns are
D4RL's REF_MIN_SCORE / REF_MAX_SCORE (d4rl/infos.py). For the generated environments they are the mean returns
of minidt's own random and expert tiers, measured by `generate.measure_reference_returns(env, episodes=1000,
seed=0)`, which reproduces the numbers below exactly.
"""

from __future__ import annotations

import numpy as np

from .envs import GYM_IDS, env_name

REF_MIN_SCORE: dict[str, float] = {  # random policy
    "hopper": -20.272305,
    "halfcheetah": -280.178953,
    "walker2d": 1.629008,
    "pendulum": -1233.246343,
    "mountaincar": -33.157944,
    "invertedpendulum": 5.029,
    "cartpole": 21.781,
    "acrobot": -499.196,
    "mountaincar-discrete": -200.0,  # a random policy never reaches the flag in 200 steps
    "keytodoor": 0.038,  # the success rate of 1000 episodes; exactly, 0.0441 (minidt.keytodoor.random_success_rate)
}
REF_MAX_SCORE: dict[str, float] = {  # expert policy
    "hopper": 3234.3,
    "halfcheetah": 12135.0,
    "walker2d": 4592.3,
    "pendulum": -157.123775,
    "mountaincar": 90.169419,
    "invertedpendulum": 994.463,
    "cartpole": 500.0,
    "acrobot": -91.124,
    "mountaincar-discrete": -119.49,
    "keytodoor": 1.0,
}


def normalized_score(env: str, returns: float | np.ndarray) -> float | np.ndarray:
    """100 (R - R_random) / (R_expert - R_random) for a known environment (short name, gymnasium id or D4RL name);
    elementwise on an array of returns."""
    name = env_name(env)
    if name not in REF_MIN_SCORE:
        raise ValueError(f"env {env!r}: no reference returns; expected one of {', '.join(REF_MIN_SCORE)} "
                         f"(or their gymnasium ids: {', '.join(GYM_IDS[n] for n in REF_MIN_SCORE)})")
    lo, hi = REF_MIN_SCORE[name], REF_MAX_SCORE[name]
    score = 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)
    return float(score) if score.ndim == 0 else score


def describe_returns(env: str, returns: np.ndarray) -> str:
    """A dataset's episode returns in a line, "return mean -650.2 (min -1400.1, max -120.3), normalized score
    50.5", the score when the environment has reference returns (`minidt generate` prints it)."""
    r = np.asarray(returns, np.float64)
    line = f"return mean {r.mean():.1f} (min {r.min():.1f}, max {r.max():.1f})"
    if env_name(env) in REF_MIN_SCORE:
        line += f", normalized score {normalized_score(env, r).mean():.1f}"
    return line
