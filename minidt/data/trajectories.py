"""Episodes and the statistics Decision Transformer training needs from them.

Convention: an episode of T steps holds T observations, s_0 .. s_{T-1}, each the state its action a_t was taken
in (D4RL's layout). Minari stores T + 1 observations (the last is the state after the final action); readers drop
that last one, because the model never sees a state without its action.

    returns-to-go  R_t = r_t + r_{t+1} + ... + r_{T-1}        (undiscounted, as in the paper)
    state_mean, state_std over every state of every episode  (std + 1e-6, as the reference repo)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..validate import finite, host_array
from .envs import default_scale


def one_hot(name: str, ids: np.ndarray, n: int) -> np.ndarray:
    """Discrete actions, integers in [0, n) of shape (T,) or (T, 1), -> one-hot rows (T, n) float32: how a discrete
    action is stored and fed to the model. ValueError naming `name` for anything else."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu" or ids.ndim not in (1, 2) or (ids.ndim == 2 and ids.shape[1] != 1):
        raise ValueError(f"{name}: expected integer action ids of shape (T,) or (T, 1), got {ids.dtype} "
                         f"{ids.shape}")
    ids = ids.reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise ValueError(f"{name}: expected action ids in [0, {n - 1}] ({n} actions), got ids in "
                         f"[{ids.min()}, {ids.max()}]")
    return np.eye(n, dtype=np.float32)[ids]


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """rewards (T,) -> R (T,) float64 with R_t = sum_{t' >= t} r_t'. A reversed cumulative sum: O(T)."""
    r = np.asarray(rewards, dtype=np.float64)
    return np.cumsum(r[::-1])[::-1].copy()


@dataclass(frozen=True, eq=False)
class Episode:
    """One episode of T steps (see the module docstring for the observation convention).

    observations (T, state_dim) float32, actions (T, act_dim) float32, rewards (T,) float64, all finite (NaN,
    inf or a value float32 cannot hold raises ValueError naming the field and the index), terminations (T,) bool
    (the MDP ended: no reward follows), truncations (T,) bool (cut by a time limit or the end of the data: the
    return is a lower bound)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray

    def __post_init__(self) -> None:
        def put(name: str, value: np.ndarray) -> None:  # frozen: normalize dtypes through object.__setattr__
            object.__setattr__(self, name, value)

        for name, dtype in (("observations", "float32"), ("actions", "float32"), ("rewards", "float64")):
            put(name, finite(name, host_array(name, getattr(self, name)), dtype))  # NaN, inf
        put("rewards", self.rewards.reshape(-1))
        for name in ("terminations", "truncations"):
            put(name, host_array(name, getattr(self, name)).astype(bool).reshape(-1))
        T = len(self.rewards)
        if T == 0:
            raise ValueError("episode: expected at least one step, got 0")
        if self.observations.ndim != 2 or self.actions.ndim != 2:
            raise ValueError(f"episode: expected observations (T, state_dim) and actions (T, act_dim), got "
                             f"{self.observations.shape} and {self.actions.shape}")
        shapes = {"observations": len(self.observations), "actions": len(self.actions), "rewards": T,
                  "terminations": len(self.terminations), "truncations": len(self.truncations)}
        if set(shapes.values()) != {T}:
            raise ValueError(f"episode: expected T entries in every field, got lengths {shapes}")

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def ret(self) -> float:
        """The episode's (undiscounted) return."""
        return float(np.sum(self.rewards))

    @property
    def returns_to_go(self) -> np.ndarray:
        """(T,) float64."""
        return returns_to_go(self.rewards)


@dataclass(eq=False)
class TrajectoryDataset:
    """The episodes of one environment, with what training needs: state_mean / state_std (state_dim,) float64,
    `scale` (returns-to-go are divided by it), episode `returns` and `lengths`, and where the data came from.

    name: a label for logs and plots (readers use the Minari id or the file name). env_id: a gymnasium id or short
    name when known ("Pendulum-v1", "hopper"); it picks the default `scale` and the reference returns of
    normalized scores. discrete_actions: the actions are one-hot rows of act_dim discrete actions (checked).
    metadata: JSON-able facts about the source (file, Minari id, generation settings). The statistics are
    computed once, at construction."""

    episodes: list[Episode]
    name: str = "unnamed"
    env_id: str | None = None
    scale: float | None = None  # None: envs.default_scale(env_id, returns)
    metadata: dict[str, Any] = field(default_factory=dict)
    discrete_actions: bool = False

    def __post_init__(self) -> None:
        self.episodes = list(self.episodes)
        if not self.episodes:
            raise ValueError("dataset: expected at least one episode, got none")
        dims = {(e.observations.shape[1], e.actions.shape[1]) for e in self.episodes}
        if len(dims) != 1:
            raise ValueError(f"dataset: every episode must have the same (state_dim, act_dim), got {sorted(dims)}")
        if self.discrete_actions:
            for i, e in enumerate(self.episodes):
                if not ((e.actions == 0) | (e.actions == 1)).all() or not (e.actions.sum(axis=1) == 1).all():
                    raise ValueError(f"dataset: episode {i}: expected one-hot actions (discrete_actions), got rows "
                                     "that are not")
        self.lengths = np.array([len(e) for e in self.episodes], dtype=np.int64)  # N
        self.returns = np.array([e.ret for e in self.episodes], dtype=np.float64)  # N
        states = np.concatenate([e.observations for e in self.episodes]).astype(np.float64)  # sum T, state_dim
        self.state_mean = states.mean(axis=0)
        self.state_std = states.std(axis=0) + 1e-6  # + 1e-6: a constant state dimension must not divide by 0
        self.scale = float(self.scale) if self.scale is not None else default_scale(self.env_id, self.returns)

    def top_percent(self, percent: float) -> "TrajectoryDataset":
        """The best `percent` % of the episodes by return, for %BC: behaviour cloning on the top X %. Episodes of
        equal return are never split: whole groups of equal return are taken, best first, while they fit in
        percent % of the episodes (at least the best group). So with returns 0 or 1 (Key-to-Door) any percent below
        the share of failures gives exactly the successful episodes. The state statistics and `scale` stay the
        whole dataset's, as in the reference repo's %BC (it normalizes with every episode, then keeps the best).
        (The reference counts timesteps, not episodes: the same when every episode has the same length.)"""
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
            raise ValueError(f"top_percent: expected a percentage in (0, 100], got {percent!r}")
        values, counts = np.unique(self.returns, return_counts=True)  # ascending
        kept_groups = np.cumsum(counts[::-1]) <= percent / 100 * len(self) + 1e-9  # best first
        threshold = values[::-1][max(int(np.sum(kept_groups)), 1) - 1]
        keep = [e for e, r in zip(self.episodes, self.returns) if r >= threshold]
        subset = copy.copy(self)
        subset.episodes = keep
        subset.lengths = np.array([len(e) for e in keep], dtype=np.int64)
        subset.returns = np.array([e.ret for e in keep], dtype=np.float64)
        subset.name = f"{self.name}, top {percent:g} %"
        return subset

    @property
    def state_dim(self) -> int:
        return int(self.episodes[0].observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.episodes[0].actions.shape[1])

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        return self.episodes[i]

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes)

    def __repr__(self) -> str:
        return (f"TrajectoryDataset({self.name!r}, env_id={self.env_id!r}, episodes={len(self)}, steps={self.num_steps}, "
                f"state_dim={self.state_dim}, act_dim={self.act_dim}"
                f"{' (discrete)' if self.discrete_actions else ''}, return mean {self.returns.mean():.1f} "
                f"[{self.returns.min():.1f}, {self.returns.max():.1f}], scale={self.scale:g})")
