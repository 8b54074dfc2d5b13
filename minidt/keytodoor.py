"""Key-to-Door: the credit-assignment task of the Decision Transformer paper (section 5.3), after Mesnard et al.
(2020), as a gymnasium environment registered as "minidt/KeyToDoor-v0" (importing this module registers it).

Three rooms, one after another, each for a fixed number of steps (PHASES):

    room 0, the key     10 steps   a key lies on a random cell; stepping on it picks it up
    room 1, empty       20 steps   nothing to do: the gap the credit must be assigned across
    room 2, the door    10 steps   reaching the door ends the episode: reward 1 if the key was picked up, else 0

Every room is a SIZE x SIZE grid (5 x 5); the agent starts each room on a random cell (not on the key or the door).
Actions: 0 up, 1 down, 2 left, 3 right; a move into a wall stays put. The episode ends when the door is reached or
room 2's steps run out (terminated: the task is over, not cut short), so it lasts at most 40 steps.

The observation is 7 numbers (float32), coordinates, not one-hot cells:

    phase (0, 1, 2), agent x, agent y, key x, key y, door x, door y

the key's coordinates while it lies in room 0 (-1, -1 once picked up and in the later rooms), the door's in room 2
(-1, -1 before). Nothing says whether the key is held: only the episode's own past (the context) can tell.

A uniform random policy succeeds in 4.41 % of episodes (`random_success_rate()`, exact; the paper's version:
3.1 %): it must walk onto the key within 10 steps and onto the door within 10.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

ENV_ID = "minidt/KeyToDoor-v0"
SIZE = 5  # cells per side of every room
PHASES = (10, 20, 10)  # steps in the key room, the empty room, the door room
MOVES = np.array([(0, 1), (0, -1), (-1, 0), (1, 0)])  # up, down, left, right as (dx, dy)
ABSENT = -1.0  # the coordinates of a key or a door that is not in view


class KeyToDoorEnv(gym.Env):
    """gymnasium.make("minidt/KeyToDoor-v0"); render_mode "rgb_array" draws the room (for `--video`)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, render_mode: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.action_space = gym.spaces.Discrete(len(MOVES))
        self.observation_space = gym.spaces.Box(ABSENT, SIZE - 1, shape=(7,), dtype=np.float32)
        self.phase = self.t_phase = 0
        self.agent = self.key = self.door = np.zeros(2, np.int64)
        self.has_key = False

    def _cell(self, avoid: "np.ndarray | None" = None) -> np.ndarray:
        """A uniform random cell, not `avoid`."""
        while True:
            cell = self.np_random.integers(0, SIZE, size=2)
            if avoid is None or not np.array_equal(cell, avoid):
                return cell

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.phase, self.t_phase, self.has_key = 0, 0, False
        self.key = self._cell()
        self.agent = self._cell(avoid=self.key)
        self.door = self._cell()  # drawn now, seen in room 2
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.action_space.contains(action):
            raise ValueError(f"action: expected an integer in [0, {len(MOVES) - 1}], got {action!r}")
        self.agent = np.clip(self.agent + MOVES[int(action)], 0, SIZE - 1)
        self.t_phase += 1
        reward, terminated = 0.0, False
        if self.phase == 0 and not self.has_key and np.array_equal(self.agent, self.key):
            self.has_key = True
        if self.phase == 2 and np.array_equal(self.agent, self.door):
            reward, terminated = float(self.has_key), True
        elif self.t_phase == PHASES[self.phase]:  # the room's time is up: the next room, or the end
            if self.phase == 2:
                terminated = True
            else:
                self.phase, self.t_phase = self.phase + 1, 0
                self.agent = self._cell(avoid=self.door if self.phase == 2 else None)
        return self._obs(), reward, terminated, False, {"has_key": self.has_key}

    def _obs(self) -> np.ndarray:
        key = self.key if self.phase == 0 and not self.has_key else (ABSENT, ABSENT)
        door = self.door if self.phase == 2 else (ABSENT, ABSENT)
        return np.array([self.phase, *self.agent, *key, *door], dtype=np.float32)

    def render(self) -> "np.ndarray | None":
        """The room as an RGB image, 32 pixels a cell: the agent blue (a yellow dot while it holds the key), the
        key yellow, the door brown."""
        if self.render_mode != "rgb_array":
            return None
        px = 32
        img = np.full((SIZE * px, SIZE * px, 3), 235, np.uint8)
        img[::px, :] = img[:, ::px] = 180  # grid lines

        def fill(cell: np.ndarray, color: tuple, margin: int) -> None:
            x, y = int(cell[0]), SIZE - 1 - int(cell[1])  # y up
            img[y * px + margin:(y + 1) * px - margin, x * px + margin:(x + 1) * px - margin] = color

        if self.phase == 0 and not self.has_key:
            fill(self.key, (230, 190, 30), 9)
        if self.phase == 2:
            fill(self.door, (130, 80, 40), 3)
        fill(self.agent, (40, 90, 200), 6)
        if self.has_key:
            fill(self.agent, (230, 190, 30), 13)
        return img


def hit_probabilities(steps: int) -> np.ndarray:
    """H (cells, cells): H[s, g] is the probability that a uniform random walk (walls: stay put) from cell s steps
    onto cell g within `steps` moves (cells numbered x * SIZE + y). By the first move: H_n[s, g] = sum over s' of
    P[s, s'] (1 if s' = g else H_{n-1}[s', g]), P the one-move transition matrix."""
    n = SIZE * SIZE
    P = np.zeros((n, n))
    for x in range(SIZE):
        for y in range(SIZE):
            for dx, dy in MOVES:
                to = min(max(x + dx, 0), SIZE - 1) * SIZE + min(max(y + dy, 0), SIZE - 1)
                P[x * SIZE + y, to] += 1.0 / len(MOVES)
    H = np.zeros((n, n))
    for _ in range(steps):
        H = P @ np.where(np.eye(n, dtype=bool), 1.0, H)
    return H


def random_success_rate() -> float:
    """The exact success rate of the uniform random policy: P(key within 10 steps) P(door within 10 steps), each
    averaged over the room's uniform start and target cells (start != target)."""
    off = ~np.eye(SIZE * SIZE, dtype=bool)
    return float(hit_probabilities(PHASES[0])[off].mean() * hit_probabilities(PHASES[2])[off].mean())


def scripted_action(obs: np.ndarray) -> int:
    """The expert: in room 0 walk to the key, in room 2 to the door (x first, then y), in room 1 anything (up).
    Every cell is within 8 moves of every other, so it always succeeds."""
    phase, ax, ay, kx, ky, dx, dy = (float(v) for v in obs)
    tx, ty = (kx, ky) if phase == 0 else (dx, dy)
    if tx == ABSENT or (tx, ty) == (ax, ay):
        return 0
    if tx != ax:
        return 3 if tx > ax else 2
    return 0 if ty > ay else 1


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="minidt.keytodoor:KeyToDoorEnv", max_episode_steps=sum(PHASES))
