"""What a run achieved: its return-conditioned evaluation at several targets, how well the achieved return follows
the target, and the report a run ends with (metrics.json, the two plots, the table `minidt train` and
`minidt evaluate` print).

The targets (`evaluation_targets`) ask the paper's questions of a dataset's returns: does the achieved return
follow the target, how high can it go, and what happens past the data? `evaluate_run` is `minidt evaluate`: a
finished (or resumed, or interrupted) run's model, or one of its checkpoints, rolled out at each target
(`minidt.evaluate.rollout`), with normalized scores where the environment has reference returns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import Preprocess, add_normalized_scores, rollout
from .files import atomic_write_text
from .model import DecisionTransformerModel
from .parallel import DataParallel
from .runs import load_run, locate_run, read_metrics, read_run_info
from .settings import EVAL_SEED, TrainSettings
from .td3bc.report import evaluate_run as evaluate_td3bc_run


def evaluation_targets(returns: Any, n: int = 5) -> list[float]:
    """Target returns for a dataset with these episode returns: n evenly spanning [min, max]; the mean of its
    best 10% of episodes (its expert-level return: the best episode alone is often an outlier, e.g. a Pendulum
    episode that starts upright); and one beyond the best by a quarter of the range. The paper's questions:
    does the achieved return follow the target, how high can it go, and what happens past the data?"""
    returns = np.sort(np.asarray(returns, np.float64))
    lo, hi = float(returns[0]), float(returns[-1])
    top = float(np.mean(returns[-max(1, len(returns) // 10):]))
    return sorted({*(float(x) for x in np.linspace(lo, hi, n)), top}) + [hi + 0.25 * (hi - lo)]


def evaluate_targets(model: DecisionTransformerModel, env: str, targets: list[float], episodes: int,
                     pre: Preprocess, K: int, seed: int = EVAL_SEED, progress: bool = False) -> list[dict]:
    """rollout() at each target, with normalized scores when the environment has reference returns."""
    from .data import REF_MIN_SCORE, env_name, gym_spec, normalized_score

    results = rollout(model, gym_spec(env)["id"], targets, episodes, pre, K, seed=seed, progress=progress)
    if env_name(env) in REF_MIN_SCORE:
        add_normalized_scores(results, lambda r: normalized_score(env, r))
    return results


def run_evaluation(model: DecisionTransformerModel, s: TrainSettings, pre: Preprocess, data: Any, episodes: int,
                   progress: bool) -> list[dict]:
    """The evaluation a training run makes of itself (every eval_every steps, and at the end): its dataset's
    targets in its environment."""
    return evaluate_targets(model, s.env, evaluation_targets(data.returns), episodes, pre, s.K, progress=progress)


def evaluate_run(path: "str | os.PathLike", env: str | None = None, targets: list[float] | None = None,
                 episodes: int = 20, seed: int = EVAL_SEED, progress: bool = False, workers: int | None = None
                 ) -> list[dict]:
    """Evaluate a finished (or resumed, or interrupted) run's latest model, or one of its checkpoints/step-N:
    `minidt evaluate PATH`. env: the run's own by default; targets: the run's (evaluation_targets of its
    dataset's returns) by default; workers: DataParallel's (None: the usable cores, 1: off). A TD3+BC run takes
    no targets: its evaluation is plain rollouts (minidt.td3bc.report.evaluate_run)."""
    from .data import gym_spec

    if episodes < 1:
        raise ValueError(f"--episodes: expected at least 1, got {episodes}")
    if targets is not None and not (targets and np.isfinite(targets).all()):
        raise ValueError(f"--targets: expected finite numbers, got {targets}")
    if seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, got {seed}")
    if read_run_info(locate_run(path)[0]).settings.algo == "td3bc":  # not return-conditioned: plain rollouts
        return evaluate_td3bc_run(path, env, targets, episodes, seed, progress)
    info, model = load_run(path)
    env = env or info.env
    spec = gym_spec(env, "--env")
    cfg = model.config
    if (cfg.state_dim, cfg.act_dim) != (spec["state_dim"], spec["act_dim"]):
        raise ValueError(f"--env: {env} has observations of size {spec['state_dim']} and actions of size "
                         f"{spec['act_dim']}, but the checkpoint in {path} expects state_dim {cfg.state_dim} and "
                         f"act_dim {cfg.act_dim} (trained on {info.env})")
    pre = info.pre
    pre.action_low, pre.action_high = spec["action_low"], spec["action_high"]
    if targets is None:
        targets = evaluation_targets(info.dataset_returns)
    return evaluate_targets(DataParallel(model, workers), env, targets, episodes, pre, info.settings.K, seed,
                            progress)


# --- how the achieved return follows the target ------------------------------------------------------------------

def spearman(x: list[float], y: list[float]) -> float:
    """Rank correlation of achieved with target return; 0.0 when either side is constant (scipy gives NaN)."""
    from scipy.stats import spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def conditioning(evaluations: list[dict], dataset_best: float) -> dict:
    """How well the achieved return follows the target, over the targets within the data (<= its best return):
    the rank correlation of achieved with target, unless the achieved returns are flat, i.e. their range is within
    the episodes' spread (the mean std over episodes): then a correlation would rank noise, and it is None."""
    inside = [e for e in evaluations if e["target_return"] <= dataset_best + 1e-9]
    if len(inside) < 2:
        return {"rank_correlation": None, "returns_flat": None}
    means = [e["return_mean"] for e in inside]
    spread = float(np.mean([e["return_std"] for e in inside]))
    flat = bool(np.ptp(means) <= spread)
    return {"rank_correlation": None if flat else spearman([e["target_return"] for e in inside], means),
            "returns_flat": flat, "returns_range": float(np.ptp(means)), "returns_spread": spread}


def constant_action_mse(data: Any, pre: Preprocess) -> float:
    """The loss of the best constant action, the dataset's mean (normalized to [-1, 1]): the mean over action
    dimensions of their variance. A model at or above it has learned nothing from the states."""
    a = pre.normalize_actions(np.concatenate([ep.actions for ep in data.episodes]).astype(np.float64))
    return float(np.mean(np.var(a, axis=0)))


# --- the report --------------------------------------------------------------------------------------------------

def write_report(run_dir: Path, s: TrainSettings, data: Any, pre: Preprocess, evaluations: list[dict],
                 train_time: float, wall_time: float) -> dict:
    """metrics.json (the summary it returns), loss.png and return_conditioning.png."""
    from .plots import plot_loss, plot_return_conditioning

    losses = [(r["step"], r["loss"]) for r in read_metrics(run_dir) if "loss" in r]
    best = float(np.max(data.returns))
    baseline = constant_action_mse(data, pre)
    plot_loss([x for x, _ in losses], [y for _, y in losses], run_dir / "loss.png", f"{s.env} / {data.name}",
              baseline=baseline)
    if evaluations:
        plot_return_conditioning(evaluations, run_dir / "return_conditioning.png", best,
                                 f"{s.env} / {data.name}, {s.steps} steps")
    scores = [e["normalized_score_mean"] for e in evaluations if "normalized_score_mean" in e]
    summary = {
        "env": s.env, "dataset": data.name, "steps": s.steps, "train_seconds": train_time,
        "wall_seconds": wall_time, "final_loss": losses[-1][1] if losses else None,
        "constant_action_mse": baseline,
        "best_normalized_score": max(scores) if scores else None,
        **conditioning(evaluations, best),
        "evaluations": evaluations,
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=1))
    return summary


def format_evaluations(evaluations: list[dict]) -> str:
    """The table: one line per target, its mean return, std, mean normalized score and episodes; "none" in the
    target column for a policy that takes no target (TD3+BC)."""
    lines = [f"{'target':>10}  {'return mean':>11}  {'std':>8}  {'normalized':>10}  episodes"]
    for e in evaluations:  # target None: a policy asked for nothing (TD3+BC)
        target = "none" if e["target_return"] is None else f"{e['target_return']:.1f}"
        lines.append(f"{target:>10}  {e['return_mean']:11.1f}  {e['return_std']:8.1f}  "
                     f"{e.get('normalized_score_mean', float('nan')):10.1f}  {e['episodes']}")
    return "\n".join(lines)


def format_conditioning(summary: dict) -> str:
    """The summary line under the table: the best score, and how the achieved return follows the target."""
    best = summary["best_normalized_score"]
    line = f"best normalized score {'n/a' if best is None else f'{best:.1f}'}; "
    if summary["returns_flat"]:
        return line + (f"achieved returns are flat across the targets (range {summary['returns_range']:.1f}, within "
                       f"the episodes' spread {summary['returns_spread']:.1f}): the model does not follow the target")
    if summary["rank_correlation"] is None:
        return line + "fewer than two targets within the data: no rank correlation"
    return line + f"rank correlation of achieved with target return {summary['rank_correlation']:.2f}"
