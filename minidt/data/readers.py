"""Readers for offline data: Minari datasets and D4RL hdf5 files, and `load_dataset`, the one entry point.

    load_dataset("expert", env="pendulum")             a generated tier (made and cached on first use)
    load_dataset("hopper-medium-v2.hdf5")              a D4RL file
    load_dataset("path/to/minari/dataset")             a Minari dataset directory (the one holding data/)
    load_dataset("mujoco/hopper/medium-v0")            a Minari id already on this machine (nothing is downloaded)

Everything comes back as a TrajectoryDataset with T observations per T-step episode (trajectories.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import minari
import numpy as np
from minari.dataset.minari_dataset import DATASET_ID_RE

from .envs import env_name
from .generate import TIERS, cache_dir, generate_dataset, generated_env
from .trajectories import Episode, TrajectoryDataset

D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def minari_roots() -> list[Path]:
    """Where Minari ids are looked up, in order: Minari's own directory ($MINARI_DATASETS_PATH, else
    ~/.minari/datasets), then minidt's cache of generated datasets."""
    own = os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets"
    return [Path(own), cache_dir()]


def read_minari(dataset: str | os.PathLike, *, env: str | None = None) -> TrajectoryDataset:
    """A Minari dataset, by directory (the one holding data/, or data/ itself) or by local id.

    env overrides the environment recorded in the dataset (it picks `scale` and the score normalization)."""
    path = Path(dataset)
    if path.is_dir():
        data_path = path / "data" if (path / "data").is_dir() else path
    else:
        dataset_id = str(dataset)
        if not DATASET_ID_RE.fullmatch(dataset_id):
            raise ValueError(f"Minari dataset {dataset_id!r}: not a directory, nor an id of the form "
                             "namespace/name-vN")
        found = [root / dataset_id / "data" for root in minari_roots() if (root / dataset_id / "data").is_dir()]
        if not found:
            where = ", ".join(str(r) for r in minari_roots())
            raise ValueError(f"Minari dataset {dataset_id!r}: not found locally (looked in {where}); minidt "
                             "downloads nothing: copy the dataset there or pass its directory")
        data_path = found[0]
    if not (data_path / "metadata.json").is_file():
        raise ValueError(f"Minari dataset {str(dataset)!r}: no metadata.json in {data_path}; expected a Minari "
                         "dataset directory")
    ds = minari.MinariDataset(data_path)
    for what, space in (("observation", ds.observation_space), ("action", ds.action_space)):
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"Minari dataset {ds.id!r}: {what} space {type(space).__name__}; minidt reads Box "
                             "(continuous vector) observations and actions only")
    episodes = []
    for ep in ds.iterate_episodes():
        T = len(ep.rewards)
        if T == 0:
            continue  # no step, nothing to learn from
        if len(ep.observations) not in (T, T + 1):
            raise ValueError(f"Minari dataset {ds.id!r}: episode {ep.id} has {len(ep.observations)} observations "
                             f"for {T} steps; expected {T + 1} (or {T})")
        episodes.append(Episode(observations=np.reshape(ep.observations[:T], (T, -1)),
                                actions=np.reshape(ep.actions, (T, -1)), rewards=ep.rewards,
                                terminations=ep.terminations, truncations=ep.truncations))
    if not episodes:
        raise ValueError(f"Minari dataset {ds.id!r}: no episodes")
    raw = ds.storage.metadata
    metadata: dict[str, Any] = {k: v for k, v in raw.items()
                                if isinstance(v, (str, int, float, bool, dict, list)) and "spec" not in k}
    metadata.update(source="minari", path=str(data_path))
    return TrajectoryDataset(episodes, name=ds.id, env_id=env or (ds.env_spec.id if ds.env_spec else None),
                             metadata=metadata)


def read_d4rl(path: str | os.PathLike, *, env: str | None = None) -> TrajectoryDataset:
    """A D4RL hdf5 file: flat arrays observations (N, state_dim), actions (N, act_dim), rewards, terminals,
    timeouts (N,), one row per step. An episode ends at a row with terminals or timeouts set; rows after the last
    such row form a final episode marked truncated (the reference repo drops them; its return is a lower bound).

    env: the environment, when the file name does not tell it (D4RL names do: "hopper-medium-v2.hdf5")."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"D4RL file {str(path)!r}: no such file")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in D4RL_KEYS if k not in f]
            if missing:
                raise ValueError(f"D4RL file {str(path)!r}: missing key(s) {', '.join(missing)}; expected "
                                 f"{', '.join(D4RL_KEYS)}")
            obs, act, rew, term, timeout = (f[k][()] for k in D4RL_KEYS)
    except OSError as e:
        raise ValueError(f"D4RL file {str(path)!r}: not a readable hdf5 file ({e})") from None
    N = len(rew)
    if N == 0 or {len(obs), len(act), len(term), len(timeout)} != {N}:
        raise ValueError(f"D4RL file {str(path)!r}: expected the same non-zero number of rows in every key, got "
                         f"{[len(obs), len(act), N, len(term), len(timeout)]}")
    term, timeout = np.asarray(term, dtype=bool).reshape(N), np.asarray(timeout, dtype=bool).reshape(N)
    ends = np.flatnonzero(term | timeout) + 1  # one past each episode's last row
    if len(ends) == 0 or ends[-1] != N:
        ends = np.append(ends, N)
        timeout = timeout.copy()
        timeout[-1] = True  # the unfinished final episode: cut by the end of the data
    episodes = [Episode(observations=np.reshape(obs[a:b], (b - a, -1)), actions=np.reshape(act[a:b], (b - a, -1)),
                        rewards=rew[a:b], terminations=term[a:b], truncations=timeout[a:b])
                for a, b in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True)]
    return TrajectoryDataset(episodes, name=path.stem, env_id=env or env_name(path.stem),
                             metadata={"source": "d4rl", "path": str(path)})


def load_dataset(spec: str | os.PathLike, env: str | None = None, *, episodes: int | None = None, seed: int = 0,
                 progress: bool = True) -> TrajectoryDataset:
    """A dataset from a tier name (generated for `env`; episodes and seed choose which one), a D4RL .hdf5 path,
    a Minari dataset directory, or a local Minari id. Bad input raises a one-line ValueError that says what is
    wrong and what is accepted."""
    spec_str = str(spec)
    if spec_str in TIERS:
        if env is None:
            raise ValueError(f"dataset {spec_str!r} is a generated tier: pass env= one of pendulum, mountaincar, "
                             "invertedpendulum")
        return read_minari(generate_dataset(generated_env(env), spec_str, episodes, seed, progress=progress))
    path = Path(spec_str).expanduser()
    if path.suffix in (".hdf5", ".h5"):
        return read_d4rl(path, env=env)
    if path.is_dir():
        return read_minari(path, env=env)
    if DATASET_ID_RE.fullmatch(spec_str) and ("/" in spec_str or "-v" in spec_str):
        return read_minari(spec_str, env=env)
    raise ValueError(f"dataset {spec_str!r}: expected a tier ({', '.join(TIERS)}) with env=, a D4RL .hdf5 file, "
                     "a Minari dataset directory, or the id of a local Minari dataset")
