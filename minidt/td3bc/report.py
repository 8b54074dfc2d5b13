"""What a TD3+BC run achieved, and the report it ends with: metrics.json, loss.png, the evaluation `minidt
evaluate` prints.

TD3+BC is not return-conditioned: its evaluation is plain rollouts of the actor (rollout.py), one entry in the
same form as a Decision Transformer's per-target entries, with target_return None, so tables and studies read
both alike. The episodes are seeded as DT's (seed + j), so the two are compared on the same initial states.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate import Preprocess
from ..files import atomic_write_text
from ..runs import read_metrics
from ..settings import EVAL_SEED, TrainSettings
from .checkpoint import load_actor
from .networks import Actor
from .rollout import rollout_actor


def evaluate_actor(actor: Actor, env: str, episodes: int, pre: Preprocess, seed: int = EVAL_SEED,
                   progress: bool = False) -> list[dict]:
    """[{"target_return": None, "return_mean", "return_std", "length_mean", "episodes", "returns",
    "normalized_score_mean", "normalized_score_std" (when the environment has reference returns)}]."""
    from ..data import REF_MIN_SCORE, env_name, gym_spec, normalized_score

    result = {"target_return": None, "policy": "TD3+BC", **rollout_actor(actor, gym_spec(env)["id"], episodes, pre.state_mean,
                                                     pre.state_std, seed=seed, progress=progress)}
    if env_name(env) in REF_MIN_SCORE:
        scores = normalized_score(env, np.array(result["returns"]))
        result["normalized_score_mean"] = float(np.mean(scores))
        result["normalized_score_std"] = float(np.std(scores))
    return [result]


def evaluate_run(path: "str | os.PathLike", env: str | None = None, targets: list[float] | None = None,
                 episodes: int = 20, seed: int = EVAL_SEED, progress: bool = False) -> list[dict]:
    """`minidt evaluate` on a TD3+BC run (its latest networks or a checkpoints/step-N folder): plain rollouts in
    the run's environment (or `env`, which must have the same observation and action sizes)."""
    from ..data import gym_spec

    if targets is not None:
        raise ValueError(f"--targets: {path} is a TD3+BC run, which is not return-conditioned: it takes no target "
                         f"returns, got {targets}")
    info, actor = load_actor(path)
    env = env or info.env
    spec = gym_spec(env, "--env")
    want = (len(info.pre.state_mean), len(info.pre.action_low))
    if (spec["state_dim"], spec["act_dim"]) != want:
        raise ValueError(f"--env: {env} has observations of size {spec['state_dim']} and actions of size "
                         f"{spec['act_dim']}, but the TD3+BC run in {path} expects {want[0]} and {want[1]} "
                         f"(trained on {info.env})")
    return evaluate_actor(actor, env, episodes, info.pre, seed, progress)


def write_report(run_dir: Path, s: TrainSettings, data: Any, evaluations: list[dict], train_time: float,
                 wall_time: float) -> dict:
    """metrics.json (the summary it returns) and loss.png. The summary has a DT run's keys where they mean the
    same (best_normalized_score: the one evaluation's score) and TD3+BC's final losses."""
    from ..plots import plot_td3bc_losses

    records = [r for r in read_metrics(run_dir) if "critic_loss" in r]
    plot_td3bc_losses([r["step"] for r in records], [r["critic_loss"] for r in records],
                      [r["actor_loss"] for r in records], run_dir / "loss.png", f"{s.env} / {data.name}, TD3+BC")
    scores = [e["normalized_score_mean"] for e in evaluations if "normalized_score_mean" in e]
    last = records[-1] if records else {}
    summary = {
        "env": s.env, "dataset": data.name, "algo": "td3bc", "steps": s.steps, "train_seconds": train_time,
        "wall_seconds": wall_time, "final_critic_loss": last.get("critic_loss"),
        "final_actor_loss": last.get("actor_loss"), "best_normalized_score": max(scores) if scores else None,
        "evaluations": evaluations,
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=1))
    return summary
