"""What a run achieved: its return-conditioned evaluation at several targets, how well the achieved return follows
the target, and the report a run ends with (metrics.json, the two plots, the table `minidt train` and
`minidt evaluate` print).

The targets (`evaluation_targets`) ask the paper's questions of a dataset's returns: does the achieved return
follow the target, how high can it go, and what happens past the data? `evaluate_run` is `minidt evaluate`: a
finished (or resumed, or interrupted) run's model, or one of its checkpoints, rolled out at each target
(`minidt.evaluate.rollout`), with normalized scores where the environment has reference returns, and success rates
where it ends in success or failure (Key-to-Door: its targets then run from 0 to the success return, 1).

A behaviour-cloning run (BC, %BC) is not return-conditioned: its return input is zeroed, so every target would
give the same episodes. It is evaluated once, with no target: one row whose target_return is None (null in JSON),
drawn as a level line across the targets in the plot.
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


def evaluation_targets(returns: Any, n: int = 5, env: str | None = None) -> list[float]:
    """Target returns for a dataset with these episode returns: n evenly spanning [min, max]; the mean of its
    best 10% of episodes (its expert-level return: the best episode alone is often an outlier, e.g. a Pendulum
    episode that starts upright); and one beyond the best by a quarter of the range. The paper's questions:
    does the achieved return follow the target, how high can it go, and what happens past the data? In an
    environment that ends in success or failure (`env`, e.g. Key-to-Door): n evenly from 0 to the success return
    (the paper asks Key-to-Door for 1)."""
    from .data.envs import SUCCESS_RETURN, env_name

    success = SUCCESS_RETURN.get(env_name(env))
    if success is not None:
        return [float(x) for x in np.linspace(0.0, success, n)]
    returns = np.sort(np.asarray(returns, np.float64))
    lo, hi = float(returns[0]), float(returns[-1])
    top = float(np.mean(returns[-max(1, len(returns) // 10):]))
    return sorted({*(float(x) for x in np.linspace(lo, hi, n)), top}) + [hi + 0.25 * (hi - lo)]


def evaluate_targets(model: DecisionTransformerModel, env: str, targets: list[float], episodes: int,
                     pre: Preprocess, K: int, seed: int = EVAL_SEED, progress: bool = False,
                     temperature: float = 0.0) -> list[dict]:
    """rollout() at each target (a BC model, pre.zero_returns: once, target None), with normalized scores when
    the environment has reference returns and success rates when it ends in success or failure."""
    from .data import REF_MIN_SCORE, env_name, gym_spec, normalized_score
    from .data.envs import SUCCESS_RETURN

    results = rollout(model, gym_spec(env)["id"], [0.0] if pre.zero_returns else targets, episodes, pre, K,
                      seed=seed, progress=progress, temperature=temperature)
    if pre.zero_returns:
        results[0]["target_return"] = None  # the return input was 0 throughout: no target was asked for
    name = env_name(env)
    if name in REF_MIN_SCORE:
        add_normalized_scores(results, lambda r: normalized_score(env, r))
    if name in SUCCESS_RETURN:
        for r in results:
            r["success_rate"] = float(np.mean(np.asarray(r["returns"]) >= SUCCESS_RETURN[name]))
    return results


def run_evaluation(model: DecisionTransformerModel, s: TrainSettings, pre: Preprocess, data: Any, episodes: int,
                   progress: bool) -> list[dict]:
    """The evaluation a training run makes of itself (every eval_every steps, and at the end): its dataset's
    targets in its environment."""
    return evaluate_targets(model, s.env, evaluation_targets(data.returns, env=s.env), episodes, pre, s.K,
                            progress=progress)


def evaluate_run(path: "str | os.PathLike", env: str | None = None, targets: list[float] | None = None,
                 episodes: int = 20, seed: int = EVAL_SEED, progress: bool = False, workers: int | None = None,
                 temperature: float = 0.0) -> list[dict]:
    """Evaluate a finished (or resumed, or interrupted) run's latest model, or one of its checkpoints/step-N:
    `minidt evaluate PATH`. env: the run's own by default; targets: the run's (evaluation_targets of its
    dataset's returns) by default, none for a BC run; workers: DataParallel's (None: the usable cores, 1: off);
    temperature: a discrete model's actions sampled at it (0: argmax). A TD3+BC run takes no targets: its
    evaluation is plain rollouts (minidt.td3bc.report.evaluate_run)."""
    from .data import gym_spec
    from .evaluate import check_temperature

    if episodes < 1:
        raise ValueError(f"--episodes: expected at least 1, got {episodes}")
    if targets is not None and not (targets and np.isfinite(targets).all()):
        raise ValueError(f"--targets: expected finite numbers, got {targets}")
    if seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, got {seed}")
    if read_run_info(locate_run(path)[0]).settings.algo == "td3bc":  # not return-conditioned: plain rollouts
        return evaluate_td3bc_run(path, env, targets, episodes, seed, progress)
    info, model = load_run(path)
    check_temperature(temperature, model.config.discrete_actions, "--temperature")
    if targets is not None and info.pre.zero_returns:
        raise ValueError(f"--targets: {path} is a behaviour-cloning run ({info.settings.label}): its return input is "
                         "zeroed, so it takes no target; evaluate it without --targets")
    env = env or info.env
    spec = gym_spec(env, "--env")
    cfg = model.config
    if (cfg.state_dim, cfg.act_dim, cfg.discrete_actions) != (spec["state_dim"], spec["act_dim"], spec["discrete"]):
        kind = {True: "discrete actions", False: "actions of size"}
        raise ValueError(f"--env: {env} has observations of size {spec['state_dim']} and {kind[spec['discrete']]} "
                         f"{spec['act_dim']}, but the checkpoint in {path} expects state_dim {cfg.state_dim} and "
                         f"{kind[cfg.discrete_actions]} {cfg.act_dim} (trained on {info.env})")
    pre = info.pre
    pre.action_low, pre.action_high = spec["action_low"], spec["action_high"]
    if targets is None:
        targets = evaluation_targets(info.dataset_returns, env=env)
    return evaluate_targets(DataParallel(model, workers), env, targets, episodes, pre, info.settings.K, seed,
                            progress, temperature)


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
    inside = [e for e in evaluations if e["target_return"] is not None and e["target_return"] <= dataset_best + 1e-9]
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


def constant_action_cross_entropy(data: Any) -> float:
    """The discrete counterpart: the cross-entropy of the best constant logits, the log of the dataset's action
    frequencies, which is their entropy (nats; log 4 = 1.386 for uniform random actions among 4)."""
    p = np.concatenate([ep.actions for ep in data.episodes]).astype(np.float64).mean(axis=0)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def success_rate(evaluations: list[dict], env: str) -> float | None:
    """The success rate a run reports: at the success return as target (Key-to-Door: 1), or, for BC, of its one
    evaluation; None when the environment has no success or no such target was evaluated."""
    from .data.envs import SUCCESS_RETURN, env_name

    success = SUCCESS_RETURN.get(env_name(env))
    hits = [e["success_rate"] for e in evaluations if "success_rate" in e
            and (e["target_return"] is None or abs(e["target_return"] - success) < 1e-9)]
    return hits[0] if hits else None


# --- the report --------------------------------------------------------------------------------------------------

def write_report(run_dir: Path, s: TrainSettings, data: Any, pre: Preprocess, evaluations: list[dict],
                 train_time: float, wall_time: float) -> dict:
    """metrics.json (the summary it returns), loss.png and return_conditioning.png."""
    from .plots import plot_loss, plot_return_conditioning

    losses = [(r["step"], r["loss"]) for r in read_metrics(run_dir) if "loss" in r]
    best = float(np.max(data.returns))
    if data.discrete_actions:
        baseline, name = constant_action_cross_entropy(data), "constant_action_cross_entropy"
    else:
        baseline, name = constant_action_mse(data, pre), "constant_action_mse"
    title = f"{s.label} in {s.env} / {data.name}"
    plot_loss([x for x, _ in losses], [y for _, y in losses], run_dir / "loss.png", title, baseline=baseline,
              discrete=data.discrete_actions)
    success = success_rate(evaluations, s.env)
    if evaluations:
        plot_return_conditioning(evaluations, run_dir / "return_conditioning.png", best, f"{title}, {s.steps} steps",
                                 dataset_worst=float(np.min(data.returns)),
                                 success=any("success_rate" in e for e in evaluations), no_target=s.label)
    scores = [e["normalized_score_mean"] for e in evaluations if "normalized_score_mean" in e]
    summary = {
        "env": s.env, "dataset": data.name, "algo": s.algo, "top_percent": s.top_percent, "label": s.label,
        "steps": s.steps, "train_seconds": train_time,
        "wall_seconds": wall_time, "final_loss": losses[-1][1] if losses else None,
        name: baseline,
        "best_normalized_score": max(scores) if scores else None,
        **({} if success is None else {"success_rate": success}),
        **conditioning(evaluations, best),
        "evaluations": evaluations,
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=1))
    return summary


def format_evaluations(evaluations: list[dict]) -> str:
    """The table: one line per target ("none (BC)", "none (TD3+BC)": a policy that takes no target), its mean return, std, mean normalized score, success rate
    (where the environment has one) and episodes."""
    success = any("success_rate" in e for e in evaluations)
    lines = [f"{'target':>10}  {'return mean':>11}  {'std':>8}  {'normalized':>10}  "
             + ("success  " if success else "") + "episodes"]
    for e in evaluations:
        t = e["target_return"]
        target = f"none ({e.get('policy', 'BC')})" if t is None else f"{t:.1f}" if abs(t) >= 10 else f"{t:.2f}"
        lines.append(f"{target:>10}  {e['return_mean']:11.1f}  {e['return_std']:8.1f}  "
                     f"{e.get('normalized_score_mean', float('nan')):10.1f}  "
                     + (f"{100 * e['success_rate']:6.1f}%  " if success else "") + f"{e['episodes']}")
    return "\n".join(lines)


def format_conditioning(summary: dict) -> str:
    """The summary line under the table: the best score (the success rate, where there is one), and how the
    achieved return follows the target."""
    best = summary["best_normalized_score"]
    line = f"best normalized score {'n/a' if best is None else f'{best:.1f}'}; "
    if summary.get("success_rate") is not None:
        line = f"success rate {100 * summary['success_rate']:.1f} % (target 1, or BC's); " + line
    if summary.get("algo") == "bc":
        return line + "behaviour cloning: its return input is zeroed, so it was evaluated once, with no target"
    if summary["returns_flat"]:
        return line + (f"achieved returns are flat across the targets (range {summary['returns_range']:.1f}, within "
                       f"the episodes' spread {summary['returns_spread']:.1f}): the model does not follow the target")
    if summary["rank_correlation"] is None:
        return line + "fewer than two targets within the data: no rank correlation"
    return line + f"rank correlation of achieved with target return {summary['rank_correlation']:.2f}"
