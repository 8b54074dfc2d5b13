"""Offline data: episodes, the K-segment sampler, generated datasets, D4RL / Minari readers, normalized scores.

    dataset = load_dataset("medium", env="pendulum")      # or a D4RL .hdf5, a Minari directory or id
    sampler = SegmentSampler(dataset, K=20, max_ep_len=config.max_ep_len, seed=0)
    batch = sampler.sample(64)                            # model(**batch): states, actions, rewards, ...
    TransitionSampler(dataset, seed=0).sample(256)        # (s, a, r, s', not_done) for TD3+BC
    delay_rewards(dataset)                                # every episode's return on its last step
"""

from .delayed import delay_rewards
from .envs import GYM_IDS, RETURN_SCALE, env_name, gym_spec
from .experts import EXPERTS, MEDIUM_EPS
from .generate import (DEFAULT_EPISODES, TIERS, cache_dir, collect_episodes, generate_dataset,
                       generated_dataset_id, make_env, measure_reference_returns)
from .readers import load_dataset, read_d4rl, read_minari
from .sampler import SegmentSampler
from .scores import REF_MAX_SCORE, REF_MIN_SCORE, describe_returns, normalized_score
from .trajectories import Episode, TrajectoryDataset, returns_to_go
from .transitions import TransitionSampler

__all__ = [
    "delay_rewards",
    "GYM_IDS", "RETURN_SCALE", "env_name", "gym_spec",
    "DEFAULT_EPISODES", "EXPERTS", "MEDIUM_EPS", "TIERS", "cache_dir", "collect_episodes", "generate_dataset",
    "generated_dataset_id", "make_env", "measure_reference_returns",
    "load_dataset", "read_d4rl", "read_minari",
    "SegmentSampler",
    "REF_MAX_SCORE", "REF_MIN_SCORE", "describe_returns", "normalized_score",
    "Episode", "TrajectoryDataset", "returns_to_go",
    "TransitionSampler",
]
