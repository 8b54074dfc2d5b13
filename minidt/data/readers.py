"""Readers for offline data: Minari datasets and D4RL hdf5 files, and `load_dataset`, the one entry point.

    load_dataset("expert", env="pendulum")             a generated tier (made and cached on first use)
    load_dataset("hopper-medium-v2.hdf5")              a D4RL file
    load_dataset("path/to/minari/dataset")             a Minari dataset directory (the one holding data/)
    load_dataset("mujoco/hopper/medium-v0")            a Minari id already on this machine (nothing is downloaded)

Everything comes back as a TrajectoryDataset with T observations per T-step episode (trajectories.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import minari
import numpy as np
from minari.dataset.minari_dataset import DATASET_ID_RE

from ..validate import finite, host_array, said
from .envs import env_name
from .experts import EXPERTS
from .generate import TIERS, cache_dir, generate_dataset, generated_env
from .trajectories import Episode, TrajectoryDataset, one_hot

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
    data_format = minari_metadata(data_path)["data_format"]
    where = f"Minari dataset {str(data_path)!r}"
    try:
        ds = minari.MinariDataset(data_path)
    except Exception as e:  # minari's own asserts and KeyErrors on a damaged dataset
        raise ValueError(f"{where}: minari cannot read it ({said(e)})") from None
    if not isinstance(ds.observation_space, gym.spaces.Box):
        raise ValueError(f"Minari dataset {ds.id!r}: observation space {type(ds.observation_space).__name__}; "
                         "minidt reads Box (continuous vector) observations only")
    space = ds.action_space
    if not isinstance(space, (gym.spaces.Box, gym.spaces.Discrete)):
        raise ValueError(f"Minari dataset {ds.id!r}: action space {type(space).__name__}; minidt reads Box "
                         "(continuous vector) and Discrete actions only")
    discrete = isinstance(space, gym.spaces.Discrete)
    if data_format == "hdf5":
        where = f"Minari dataset file {str(data_path / 'main_data.hdf5')!r}"
        check_minari_hdf5(data_path / "main_data.hdf5", ds.total_episodes, where)
    episodes, i = [], 0
    try:
        for i, ep in enumerate(ds.iterate_episodes()):
            T = len(ep.rewards)
            if T == 0:
                continue  # no step, nothing to learn from
            if len(ep.observations) not in (T, T + 1):
                raise ValueError(f"{len(ep.observations)} observations for {T} steps; expected {T + 1} (or {T})")
            actions = (one_hot("actions", np.asarray(ep.actions) - space.start, int(space.n)) if discrete
                       else np.reshape(ep.actions, (len(ep.actions), -1)))
            episodes.append(Episode(observations=np.reshape(ep.observations[:T], (T, -1)),
                                    actions=actions, rewards=ep.rewards,
                                    terminations=ep.terminations, truncations=ep.truncations))
    except Exception as e:  # an Episode's ValueError (NaN, lengths) or minari's on a damaged episode
        raise ValueError(f"{where}: episode_{i}: {e}" if isinstance(e, ValueError) else
                         f"{where}: episode_{i}: minari cannot read it ({said(e)})") from None
    if not episodes:
        raise ValueError(f"Minari dataset {ds.id!r}: no episodes")
    raw = ds.storage.metadata
    metadata: dict[str, Any] = {k: v for k, v in raw.items()
                                if isinstance(v, (str, int, float, bool, dict, list)) and "spec" not in k}
    metadata.update(source="minari", path=str(data_path))
    return TrajectoryDataset(episodes, name=ds.id, env_id=env or (ds.env_spec.id if ds.env_spec else None),
                             metadata=metadata, discrete_actions=discrete)


def minari_metadata(data_path: Path) -> dict[str, Any]:
    """A Minari dataset's metadata.json, checked for what minari needs before it reads the data (minari itself
    meets a damaged one with a bare KeyError or AssertionError)."""
    file = data_path / "metadata.json"
    where = f"Minari dataset file {str(file)!r}"
    if not file.is_file():
        raise ValueError(f"Minari dataset {str(data_path)!r}: no metadata.json in it; expected a Minari dataset "
                         "directory")
    try:
        meta = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{where}: not a JSON file ({said(e)})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    for key, kind, what in (("dataset_id", str, "a string"), ("total_episodes", int, "an integer"),
                            ("data_format", str, "a string")):
        if key not in meta:
            raise ValueError(f"{where}: missing {key!r}; expected dataset_id, total_episodes and data_format")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise ValueError(f"{where}: {key} is {meta[key]!r}; expected {what}")
    if meta["data_format"] not in ("hdf5", "arrow"):
        raise ValueError(f"{where}: data_format {meta['data_format']!r}; expected 'hdf5' or 'arrow'")
    if meta["data_format"] == "hdf5" and not (data_path / "main_data.hdf5").is_file():
        raise ValueError(f"Minari dataset {str(data_path)!r}: main_data.hdf5 is missing or not a file")
    if meta["data_format"] == "arrow":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(f"{where}: data_format 'arrow' needs pyarrow, which is not installed: "
                             "pip install 'minari[arrow]'") from None
    return meta


MINARI_EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


def check_minari_hdf5(file: Path, total_episodes: int, where: str) -> None:
    """episode_0 .. episode_{total_episodes - 1} are there in main_data.hdf5, each with its arrays."""
    try:
        with h5py.File(file, "r") as f:
            for i in range(total_episodes):
                group = f.get(f"episode_{i}")
                if not isinstance(group, h5py.Group):
                    held = sum(name.startswith("episode_") for name in f)
                    raise ValueError(f"{where}: episode_{i} is missing (metadata.json says total_episodes "
                                     f"{total_episodes}, the file holds {held} episodes)")
                for key in MINARI_EPISODE_KEYS:
                    h5_dataset(where, group, key, f"episode_{i}/{key}")
    except OSError as e:
        raise ValueError(f"{where}: not a readable hdf5 file, truncated or damaged ({said(e)})") from None


def h5_dataset(where: str, group: Any, key: str, path: str | None = None) -> Any:
    """group[key], which must be an array with one entry per step (not a group, not a scalar)."""
    x = group.get(key)
    path = path or key
    if x is None:
        raise ValueError(f"{where}: {path} is missing")
    if not isinstance(x, h5py.Dataset):
        raise ValueError(f"{where}: {path} is a {type(x).__name__}; expected an array (an hdf5 dataset)")
    if x.ndim == 0:
        raise ValueError(f"{where}: {path} is a scalar; expected one entry per step")
    return x


def read_d4rl(path: str | os.PathLike, *, env: str | None = None, n_actions: int | None = None) -> TrajectoryDataset:
    """A D4RL hdf5 file: flat arrays observations (N, state_dim), actions (N, act_dim), rewards, terminals,
    timeouts (N,), one row per step. An episode ends at a row with terminals or timeouts set; rows after the last
    such row form a final episode marked truncated (the reference repo drops them; its return is a lower bound).
    NaN or inf in observations, actions or rewards is refused, naming the key and the row. Integer actions, (N,)
    or (N, 1), are discrete: action ids, stored as one-hot rows of n_actions (default: the largest id + 1; the
    environment's number of actions when it is known, as `minidt train` passes it).

    env: the environment, when the file name does not tell it (D4RL names do: "hopper-medium-v2.hdf5")."""
    path = Path(path)
    where = f"D4RL file {str(path)!r}"
    if path.is_dir():
        raise ValueError(f"{where}: a directory; expected an hdf5 file")
    if not path.is_file():
        raise ValueError(f"{where}: no such file")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in D4RL_KEYS if k not in f]
            if missing:
                raise ValueError(f"{where}: missing key(s) {', '.join(missing)}; expected {', '.join(D4RL_KEYS)}")
            obs, act, rew, term, timeout = (host_array(f"{where}: {k}", h5_dataset(where, f, k)[()])
                                            for k in D4RL_KEYS)
    except OSError as e:
        raise ValueError(f"{where}: not a readable hdf5 file ({said(e)})") from None
    N = len(rew)
    if N == 0 or {len(obs), len(act), len(term), len(timeout)} != {N}:
        raise ValueError(f"{where}: expected the same non-zero number of rows in every key, got "
                         f"{[len(obs), len(act), N, len(term), len(timeout)]}")
    discrete = act.dtype.kind in "iu"
    if discrete:
        n = int(act.max()) + 1 if n_actions is None else n_actions
        act = one_hot(f"{where}: actions", act, n)
    obs, act = finite(f"{where}: observations", obs, "float32"), finite(f"{where}: actions", act, "float32")
    rew = finite(f"{where}: rewards", rew, "float64")
    term, timeout = term.astype(bool).reshape(N), timeout.astype(bool).reshape(N)
    ends = np.flatnonzero(term | timeout) + 1  # one past each episode's last row
    if len(ends) == 0 or ends[-1] != N:
        ends = np.append(ends, N)
        timeout = timeout.copy()
        timeout[-1] = True  # the unfinished final episode: cut by the end of the data
    try:
        episodes = [Episode(observations=np.reshape(obs[a:b], (b - a, -1)),
                            actions=np.reshape(act[a:b], (b - a, -1)), rewards=rew[a:b], terminations=term[a:b],
                            truncations=timeout[a:b])
                    for a, b in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True)]
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return TrajectoryDataset(episodes, name=path.stem, env_id=env or env_name(path.stem),
                             metadata={"source": "d4rl", "path": str(path)}, discrete_actions=discrete)


def load_dataset(spec: str | os.PathLike, env: str | None = None, *, episodes: int | None = None, seed: int = 0,
                 progress: bool = True, n_actions: int | None = None) -> TrajectoryDataset:
    """A dataset from a tier name (generated for `env`; episodes and seed choose which one), a D4RL .hdf5 path,
    a Minari dataset directory, or a local Minari id. n_actions: the number of discrete actions of a D4RL file
    with integer actions (read_d4rl). Bad input raises a one-line ValueError that says what is wrong and what is
    accepted."""
    spec_str = str(spec)
    if spec_str in TIERS:
        if env is None:
            raise ValueError(f"dataset {spec_str!r} is a generated tier: pass env= one of "
                             f"{', '.join(EXPERTS)}")
        return read_minari(generate_dataset(generated_env(env), spec_str, episodes, seed, progress=progress))
    path = Path(spec_str).expanduser()
    if path.suffix in (".hdf5", ".h5"):
        return read_d4rl(path, env=env, n_actions=n_actions)
    if path.is_dir():
        return read_minari(path, env=env)
    if DATASET_ID_RE.fullmatch(spec_str) and ("/" in spec_str or "-v" in spec_str):
        return read_minari(spec_str, env=env)
    raise ValueError(f"dataset {spec_str!r}: expected a tier ({', '.join(TIERS)}) with env=, a D4RL .hdf5 file, "
                     "a Minari dataset directory, or the id of a local Minari dataset")
