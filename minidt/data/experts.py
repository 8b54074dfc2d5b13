"""The scripted experts the generated datasets are made with, one per environment, and each tier's mix with
random actions (generate.py): a continuous expert returns an action vector, a discrete one an action index.

    continuous:  Pendulum-v1, MountainCarContinuous-v0, InvertedPendulum-v5 (MuJoCo)
    discrete:    CartPole-v1, Acrobot-v1, MountainCar-v0, minidt/KeyToDoor-v0
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..keytodoor import scripted_action as keytodoor_expert


def pendulum_expert(obs: np.ndarray) -> np.ndarray:
    """Pendulum-v1, obs (cos th, sin th, thdot), th = 0 upright -> torque (1,) in [-2, 2].

    Dynamics (g = 10, m = l = 1): thddot = 15 sin th + 3 u, which conserves E = thdot^2 / 2 + 15 cos th when u = 0
    (E = 15 upright at rest) and gives dE/dt = 3 u thdot. Far from the top: pump energy towards 15 (u along thdot
    while E < 15, against it when E > 15). Near the top: PD, u = -(12 th + 2.5 thdot), which makes the linearized
    thddot = -21 th - 7.5 thdot stable; with |u| <= 2 it can hold th up to about 0.4 rad."""
    c, s, thdot = (float(v) for v in obs)
    th = np.arctan2(s, c)
    if c > np.cos(0.5) and abs(thdot) < 4.0:
        u = -(12.0 * th + 2.5 * thdot)
    else:
        E = 0.5 * thdot * thdot + 15.0 * c
        u = 0.5 * (15.0 - E) * (1.0 if thdot >= 0 else -1.0)
    return np.array([np.clip(u, -2.0, 2.0)])


def mountaincar_expert(obs: np.ndarray) -> np.ndarray:
    """MountainCarContinuous-v0, obs (x, v) -> force (1,): full force along the velocity (bang-bang). Each push
    adds energy, so the car swings higher each time until it tops the right hill (about 105 steps)."""
    return np.array([1.0 if obs[1] >= 0 else -1.0])


def invertedpendulum_expert(obs: np.ndarray) -> np.ndarray:
    """InvertedPendulum-v5, obs (x, th, xdot, thdot) -> force (1,) in [-3, 3]: state feedback u = k . obs, gains
    found by hand (all positive: push the cart under the falling pole; the x and xdot terms keep it on the rail)."""
    return np.clip(np.array([1.0, 30.0, 2.0, 5.0]) @ obs, -3.0, 3.0).reshape(1)


def cartpole_expert(obs: np.ndarray) -> int:
    """CartPole-v1, obs (x, xdot, th, thdot), th > 0 leaning right -> push right (1) or left (0): a linear
    controller on the pole's angle and angular velocity, push towards where the pole will lean, th + 0.25 thdot.
    It holds all 500 steps (measured: every one of 1000 seeded episodes); the angle alone (without thdot)
    oscillates and falls within about 40 steps."""
    return int(obs[2] + 0.25 * obs[3] > 0)


def acrobot_expert(obs: np.ndarray) -> int:
    """Acrobot-v1, obs (cos th1, sin th1, cos th2, sin th2, th1dot, th2dot) -> torque -1, 0, +1 (actions 0, 1, 2)
    on the middle joint. Energy pumping: the torque along the middle joint's velocity, so its power tau th2dot is
    never negative and every swing adds energy, until the tip swings above the bar (about 85 steps)."""
    return 2 if obs[5] > 0 else 0


def mountaincar_discrete_expert(obs: np.ndarray) -> int:
    """MountainCar-v0, obs (x, v) -> push left (0) or right (2): full force along the velocity, as the continuous
    version's expert (about 120 steps)."""
    return 2 if obs[1] >= 0 else 0


EXPERTS: dict[str, Callable[[np.ndarray], "np.ndarray | int"]] = {
    "pendulum": pendulum_expert,
    "mountaincar": mountaincar_expert,
    "invertedpendulum": invertedpendulum_expert,
    "cartpole": cartpole_expert,
    "acrobot": acrobot_expert,
    "mountaincar-discrete": mountaincar_discrete_expert,
    "keytodoor": keytodoor_expert,
}
# Probability of a random action in the medium tier, tuned so that medium scores about 50 normalized: measured
# over 1000 episodes with seed 0 (+- the standard error): pendulum 50.5 (0.6), mountaincar 50.7 (1.4),
# invertedpendulum 50.6 (1.4, 600 episodes); cartpole 50.7 (0.9), acrobot 49.2 (0.6), mountaincar-discrete 50.4
# (1.0), keytodoor 52.0 (1.6).
MEDIUM_EPS = {"pendulum": 0.6, "mountaincar": 0.905, "invertedpendulum": 0.035, "cartpole": 0.42, "acrobot": 0.78,
              "mountaincar-discrete": 0.26, "keytodoor": 0.53}
