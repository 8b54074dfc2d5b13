"""The environments minidt knows by name: short names, gymnasium ids, and the scale returns-to-go are divided by;
and what any gymnasium environment looks like to the model (`gym_spec`).

A short name ("pendulum", "hopper") is what the CLI and the score tables use; a gymnasium id ("Pendulum-v1",
"Hopper-v5", any version) or a D4RL file stem ("hopper-medium-v2") maps to it.
"""

from __future__ import annotations

import re

import numpy as np

from ..keytodoor import ENV_ID as KEY_TO_DOOR  # importing it registers minidt/KeyToDoor-v0 with gymnasium

# short name -> the gymnasium id minidt generates data in (continuous actions, then discrete) or evaluates
# D4RL-style data in (the last three)
GYM_IDS: dict[str, str] = {
    "pendulum": "Pendulum-v1",
    "mountaincar": "MountainCarContinuous-v0",
    "invertedpendulum": "InvertedPendulum-v5",
    "cartpole": "CartPole-v1",
    "acrobot": "Acrobot-v1",
    "mountaincar-discrete": "MountainCar-v0",
    "keytodoor": KEY_TO_DOOR,
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
}
_BY_GYM_NAME = {re.sub(r"-v\d+$", "", gym_id): name for name, gym_id in GYM_IDS.items()}

# The return at which an episode counts as a success, for tasks that end in success or failure: evaluations report
# the success rate (Key-to-Door pays 1 at the door with the key, else 0).
SUCCESS_RETURN: dict[str, float] = {"keytodoor": 1.0}

# Returns-to-go enter the model divided by this, so that they are O(1). 1000 for the MuJoCo tasks is the paper's
# value; the others put the largest |return| of the environment between 1 and 10.
RETURN_SCALE: dict[str, float] = {
    "pendulum": 1000.0,  # returns in about [-1600, 0]
    "mountaincar": 100.0,  # returns in about [-100, 100]
    "invertedpendulum": 1000.0,  # returns in [0, 1000]
    "cartpole": 100.0,  # returns in [about 8, 500]
    "acrobot": 100.0,  # returns in [-500, about -60]
    "mountaincar-discrete": 100.0,  # returns in [-200, about -85]
    "keytodoor": 1.0,  # returns 0 or 1
    "hopper": 1000.0,
    "halfcheetah": 1000.0,
    "walker2d": 1000.0,
}


def env_name(env: str | None) -> str | None:
    """The short name of an environment ("pendulum"), or None when minidt does not know it.

    Accepts a short name, a gymnasium id of any version ("Pendulum-v1", "Hopper-v2", "minidt/KeyToDoor-v0") or a
    D4RL dataset name ("hopper-medium-replay-v2")."""
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
    """The gymnasium id, episode length, sizes and action space of an environment (made once, closed at once):
    "discrete" and act_dim, the number of actions, for a Discrete action space; the action bounds of a Box one.
    ValueError, naming the argument `name`, for an unknown environment, or one whose observations are not a
    continuous vector (Box) or whose actions are neither a bounded Box nor a Discrete space counted from 0."""
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
        space = env.action_space
        if not isinstance(env.observation_space, gym.spaces.Box):
            raise ValueError(f"{name} {env_id}: its observation space is {env.observation_space}; minidt's Decision "
                             "Transformer reads continuous observations (a Box space)")
        spec = {"id": gym_id, "max_episode_steps": env.spec.max_episode_steps or 1000,
                "state_dim": int(np.prod(env.observation_space.shape))}
        if isinstance(space, gym.spaces.Discrete):
            if space.start != 0:
                raise ValueError(f"{name} {env_id}: its action space {space} starts at {space.start}; minidt "
                                 "numbers discrete actions from 0")
            return {**spec, "discrete": True, "act_dim": int(space.n), "action_low": np.zeros(0),
                    "action_high": np.zeros(0)}
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"{name} {env_id}: its action space is {space}; minidt's Decision Transformer predicts "
                             "continuous actions (a Box space) or one of n discrete actions (a Discrete space)")
        if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
            raise ValueError(f"{name} {env_id}: its action space {space} is unbounded; minidt maps the "
                             "model's tanh output onto finite action bounds")
        return {**spec, "discrete": False, "act_dim": int(np.prod(space.shape)),
                "action_low": np.asarray(space.low, np.float64), "action_high": np.asarray(space.high, np.float64)}
    finally:
        env.close()
