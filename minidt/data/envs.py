"""The environments minidt knows by name: short names, gymnasium ids, and the scale returns-to-go are divided by;
and what any gymnasium environment looks like to the model (`gym_spec`).

A short name ("pendulum", "hopper") is what the CLI and the score tables use; a gymnasium id ("Pendulum-v1",
"Hopper-v5", any version) or a D4RL file stem ("hopper-medium-v2") maps to it.
"""

from __future__ import annotations

import re

import numpy as np

# short name -> the gymnasium id minidt generates data in (first three) or evaluates D4RL-style data in (last three)
GYM_IDS: dict[str, str] = {
    "pendulum": "Pendulum-v1",
    "mountaincar": "MountainCarContinuous-v0",
    "invertedpendulum": "InvertedPendulum-v5",
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
}
_BY_GYM_NAME = {re.sub(r"-v\d+$", "", gym_id): name for name, gym_id in GYM_IDS.items()}

# Returns-to-go enter the model divided by this, so that they are O(1). 1000 for the MuJoCo tasks is the paper's
# value; the others put the largest |return| of the environment between 1 and 10.
RETURN_SCALE: dict[str, float] = {
    "pendulum": 1000.0,  # returns in about [-1600, 0]
    "mountaincar": 100.0,  # returns in about [-100, 100]
    "invertedpendulum": 1000.0,  # returns in [0, 1000]
    "hopper": 1000.0,
    "halfcheetah": 1000.0,
    "walker2d": 1000.0,
}


def env_name(env: str | None) -> str | None:
    """The short name of an environment ("pendulum"), or None when minidt does not know it.

    Accepts a short name, a gymnasium id of any version ("Pendulum-v1", "Hopper-v2") or a D4RL dataset name
    ("hopper-medium-replay-v2")."""
    if env is None:
        return None
    if env in GYM_IDS:
        return env
    base = re.sub(r"-v\d+$", "", env)
    if base in _BY_GYM_NAME:
        return _BY_GYM_NAME[base]
    first = env.split("-")[0].lower()  # D4RL: "<env>-<tier>-v<N>"
    return first if first in ("hopper", "halfcheetah", "walker2d") else None


def default_scale(env: str | None, returns: np.ndarray) -> float:
    """RETURN_SCALE for a known environment; otherwise the power of ten at or below the largest |episode return|
    (1 if all returns are below 1 in size), so returns-to-go stay within about [-10, 10]."""
    name = env_name(env)
    if name is not None:
        return RETURN_SCALE[name]
    largest = float(np.max(np.abs(returns))) if len(returns) else 0.0
    return float(10.0 ** np.floor(np.log10(largest))) if largest >= 1.0 else 1.0


def gym_spec(env_id: str, name: str = "env") -> dict:
    """The gymnasium id, episode length and action bounds of an environment (made once, closed at once).
    ValueError, naming the argument `name`, for an unknown environment or one whose observations or actions are not
    continuous vectors (Box): minidt's Decision Transformer predicts continuous actions."""
    import gymnasium as gym

    short = env_name(env_id)
    gym_id = GYM_IDS.get(short, env_id) if short else env_id
    try:
        env = gym.make(gym_id)
    except gym.error.DependencyNotInstalled as e:
        raise ValueError(f'{name} {env_id}: needs MuJoCo: pip install "minidt[mujoco]" ({e})') from None
    except (gym.error.Error, ModuleNotFoundError, TypeError, AttributeError) as e:
        raise ValueError(f"{name} {env_id}: not a gymnasium environment ({e}); expected a short name "
                         f"({', '.join(GYM_IDS)}) or a registered gymnasium id such as Pendulum-v1") from None
    try:
        for what, space, does in (("action", env.action_space, "predicts continuous actions"),
                                  ("observation", env.observation_space, "reads continuous observations")):
            if not isinstance(space, gym.spaces.Box):
                raise ValueError(f"{name} {env_id}: its {what} space is {space}; minidt's Decision Transformer "
                                 f"{does} (a Box space)")
        if not (np.isfinite(env.action_space.low).all() and np.isfinite(env.action_space.high).all()):
            raise ValueError(f"{name} {env_id}: its action space {env.action_space} is unbounded; minidt maps the "
                             "model's tanh output onto finite action bounds")
        return {"id": gym_id, "max_episode_steps": env.spec.max_episode_steps or 1000,
                "state_dim": int(np.prod(env.observation_space.shape)),
                "act_dim": int(np.prod(env.action_space.shape)),
                "action_low": np.asarray(env.action_space.low, np.float64),
                "action_high": np.asarray(env.action_space.high, np.float64)}
    finally:
        env.close()
