"""Offline datasets generated in real gymnasium environments by scripted controllers, in D4RL's tiers.

One policy family covers every tier: with probability eps take a uniform random action, otherwise the scripted
expert's action (experts.py) plus Gaussian noise (std EXPERT_NOISE of the action half-range), clipped to the
action box; in a discrete action space, the expert's action as it is.

    random          eps = 1
    expert          eps = 0                      (the scripted controller with small action noise)
    medium          eps = MEDIUM_EPS[env]        (tuned so its normalized score lands near 50)
    medium-replay   eps from 1 down to MEDIUM_EPS over the episodes: a simulated learning curve up to medium
    full-replay     eps from 1 down to 0: the learning curve all the way to expert
    medium-expert   the medium episodes followed by the expert episodes (2 x episodes in all), as D4RL

Episode i of a tier is seeded by SeedSequence([seed, stream, i]) alone (stream: which policy schedule), so a
dataset is reproducible by seed, independent of how many episodes precede it, and medium-expert holds exactly
the episodes of medium and of expert.

Datasets are written in Minari's on-disk format under cache_dir() ($MINIDT_CACHE, else $XDG_CACHE_HOME/minidt,
else ~/.cache/minidt) with ids like "minidt/pendulum/expert-v0", so that with MINARI_DATASETS_PATH pointed at the
cache, minari.load_dataset(id) reads them too. A dataset is written to a hidden temporary directory and renamed
into place, so an interrupted run never leaves half a dataset behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Iterator

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer
from tqdm import tqdm  # not tqdm.auto: in a notebook without ipywidgets it warns (IProgress not found)

from .envs import GYM_IDS, env_name
from .experts import EXPERTS, MEDIUM_EPS
from .scores import REF_MAX_SCORE, REF_MIN_SCORE

GENERATOR_VERSION = 0  # the -vN of every generated id; bump it when a controller or a schedule changes
TIERS = ("random", "medium", "expert", "medium-replay", "full-replay", "medium-expert")
EXPERT_NOISE = 0.1  # expert action noise std, as a fraction of the action half-range
DEFAULT_EPISODES = {"pendulum": 200, "mountaincar": 200, "invertedpendulum": 200, "cartpole": 200, "acrobot": 200,
                    "mountaincar-discrete": 200, "keytodoor": 10_000}  # Key-to-Door: the paper's larger dataset


# --- rollouts ----------------------------------------------------------------------------------------------------

def generated_env(env: str) -> str:
    """The short name of an environment minidt generates data for; ValueError naming the choices otherwise."""
    name = env_name(env)
    if name not in EXPERTS:
        choices = ", ".join(f"{n} ({GYM_IDS[n]})" for n in EXPERTS)
        raise ValueError(f"env {env!r}: no generated datasets for it; expected one of {choices}")
    return name


def make_env(env: str) -> gym.Env:
    """gym.make for a generated environment, with the install line when MuJoCo is missing."""
    gym_id = GYM_IDS[generated_env(env)]
    try:
        return gym.make(gym_id)
    except (ImportError, gym.error.DependencyNotInstalled) as e:
        raise ImportError(f'{gym_id} needs MuJoCo: pip install "minidt[mujoco]" (or "gymnasium[mujoco]"); {e}') from e


def episode_plan(env: str, tier: str, episodes: int) -> list[tuple[int, int, float]]:
    """(stream, index, eps) for each episode of a tier: the seed stream (the tier's position in TIERS: append new
    tiers, never reorder), the episode's index in it, and the probability of a random action."""
    medium = MEDIUM_EPS[generated_env(env)]
    if tier not in TIERS:
        raise ValueError(f"tier {tier!r}: expected one of {', '.join(TIERS)}")
    if episodes < 1:
        raise ValueError(f"episodes: expected at least 1, got {episodes}")
    if tier == "medium-expert":
        return episode_plan(env, "medium", episodes) + episode_plan(env, "expert", episodes)
    eps = {"random": np.ones(episodes), "medium": np.full(episodes, medium), "expert": np.zeros(episodes),
           "medium-replay": np.linspace(1.0, medium, episodes), "full-replay": np.linspace(1.0, 0.0, episodes)}
    return [(TIERS.index(tier), i, float(e)) for i, e in enumerate(eps[tier])]


def rollout(env: gym.Env, expert: Callable[[np.ndarray], "np.ndarray | int"], eps: float,
            seed: np.random.SeedSequence) -> EpisodeBuffer:
    """One episode -> minari.EpisodeBuffer: observations (T+1, obs_dim) (Minari keeps the final one),
    actions (T, act_dim) (discrete: (T,) integers), rewards, terminations, truncations (T,), and the seed
    env.reset was given."""
    env_seed, policy_seed = seed.spawn(2)  # independent streams for the environment and the policy
    reset_seed = int(env_seed.generate_state(1)[0])
    rng = np.random.default_rng(policy_seed)
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        def act(obs: np.ndarray, random: bool) -> np.ndarray:
            return np.asarray(space.start + rng.integers(space.n) if random else expert(obs), dtype=space.dtype)
    else:
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        noise = EXPERT_NOISE * (high - low) / 2

        def act(obs: np.ndarray, random: bool) -> np.ndarray:
            a = rng.uniform(low, high) if random else np.clip(expert(obs) + noise * rng.standard_normal(low.shape),
                                                              low, high)
            return a.astype(space.dtype)
    obs, _ = env.reset(seed=reset_seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    while True:
        a = act(obs, rng.random() < eps)
        obs, r, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        actions.append(a)
        rewards.append(float(r))
        terminations.append(bool(terminated))
        truncations.append(bool(truncated))
        if terminated or truncated:
            break
    return EpisodeBuffer(seed=reset_seed, observations=np.stack(observations), actions=np.stack(actions),
                         rewards=np.array(rewards), terminations=np.array(terminations),
                         truncations=np.array(truncations))


def collect_episodes(env: str, tier: str, episodes: int, seed: int = 0, *,
                     progress: bool = True) -> list[EpisodeBuffer]:
    """Run a tier's policies: a list of minari.EpisodeBuffer (len(...) == episodes, 2 x episodes for
    medium-expert). Nothing is written."""
    name = generated_env(env)
    plan = episode_plan(name, tier, episodes)
    gym_env = make_env(name)
    try:
        return [rollout(gym_env, EXPERTS[name], eps, np.random.SeedSequence([seed, stream, i]))
                for stream, i, eps in tqdm(plan, desc=f"{name} {tier}", unit="ep", disable=not progress)]
    finally:
        gym_env.close()


def measure_reference_returns(env_id: str, episodes: int = 100, seed: int = 0, *,
                              progress: bool = True) -> tuple[float, float]:
    """Re-measure a generated environment's reference returns: -> (R_random, R_expert), the mean returns of the
    random and the expert tier over `episodes` seeded episodes each (the same episodes those tiers' datasets
    hold). scores.REF_MIN_SCORE / REF_MAX_SCORE hold them, measured over 1000 episodes with seed 0."""
    means = []
    for tier in ("random", "expert"):
        buffers = collect_episodes(env_id, tier, episodes, seed, progress=progress)
        means.append(float(np.mean([np.sum(b.rewards) for b in buffers])))
    return means[0], means[1]


# --- the cache, in Minari's format -------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Where generated datasets live: $MINIDT_CACHE, else $XDG_CACHE_HOME/minidt, else ~/.cache/minidt."""
    if os.environ.get("MINIDT_CACHE"):
        return Path(os.environ["MINIDT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minidt"


def generated_dataset_id(env: str, tier: str, episodes: int | None = None, seed: int = 0) -> str:
    """The Minari id of a generated dataset: "minidt/pendulum/expert-v0" with the default episodes and seed 0,
    "minidt/pendulum/expert-seed1-n50-v0" otherwise."""
    name = generated_env(env)
    episode_plan(name, tier, episodes or 1)  # validates the tier
    n = DEFAULT_EPISODES[name] if episodes is None else episodes
    suffix = "" if (n, seed) == (DEFAULT_EPISODES[name], 0) else f"-seed{seed}-n{n}"
    return f"minidt/{name}/{tier}{suffix}-v{GENERATOR_VERSION}"


@contextlib.contextmanager
def _minari_root(path: Path) -> Iterator[None]:
    """Point minari at another datasets directory for the duration (minari reads the variable on every call).
    Process-wide, so not thread-safe: generation is a one-off step before training."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def generate_dataset(env: str, tier: str, episodes: int | None = None, seed: int = 0, *,
                     progress: bool = True) -> Path:
    """Generate a tier's dataset into the cache unless it is there: -> its directory, cache_dir() / id (the
    Minari dataset directory, holding data/). episodes None: DEFAULT_EPISODES[env]."""
    name = generated_env(env)
    dataset_id = generated_dataset_id(name, tier, episodes, seed)
    n = DEFAULT_EPISODES[name] if episodes is None else episodes
    root = cache_dir()
    final = root / dataset_id
    if (final / "data").is_dir():
        return final
    buffers = collect_episodes(name, tier, n, seed, progress=progress)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))  # hidden: minari's listing skips dot-directories
    try:
        gym_env = make_env(name)
        with _minari_root(tmp), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(code_permalink|author_email).*")
            dataset = minari.create_dataset_from_buffers(
                dataset_id, buffers, env=gym_env, eval_env=gym_env.spec,
                algorithm_name=f"minidt scripted {name} expert, random action with probability eps",
                author="minidt", ref_min_score=REF_MIN_SCORE[name], ref_max_score=REF_MAX_SCORE[name],
                description=f"{tier} tier of {GYM_IDS[name]}: {len(buffers)} episodes, seed {seed} "
                            f"(minidt.data.generate, generator v{GENERATOR_VERSION})")
            dataset.storage.update_metadata({"minidt": {"env": name, "tier": tier, "episodes": n, "seed": seed,
                                                        "medium_eps": MEDIUM_EPS[name],
                                                        "expert_noise": EXPERT_NOISE}})
        gym_env.close()
        final.parent.mkdir(parents=True, exist_ok=True)
        for parent in Path(dataset_id).parents:  # minari's namespace files, so `minari list local` shows them
            src = tmp / parent / "namespace_metadata.json"
            if parent != Path(".") and src.exists() and not (root / src.relative_to(tmp)).exists():
                shutil.copyfile(src, root / src.relative_to(tmp))
        try:
            os.rename(tmp / dataset_id, final)
        except OSError:
            if not (final / "data").is_dir():  # else another process finished the same dataset first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
