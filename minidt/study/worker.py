"""One run of a study, in its own process: train it (or resume it, or only evaluate it), read its score, and
write the result beside the run.

A run directory left by an interrupted study is picked up where it stopped:

    study-result.json there    the run is finished; the runner keeps it and starts nothing
    metrics.json there         training and its own evaluation are done: only the study's evaluation runs
    a checkpoint there         training resumes from the latest checkpoint (bit for bit: minidt.train)
    run.json but no checkpoint the run is trained again from the start (it had done fewer steps than
                               checkpoint_every: at most that many steps are lost)

Each process holds OpenBLAS to one thread (threadpoolctl) and runs with DataParallel off (workers 1): the runner
starts one such process per usable core. A process in the middle of training that gets SIGINT finishes the step
under way, writes a checkpoint and exits with status 130 (minidt.train's signal handling).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_text, read_json
from ..runs import read_metrics, read_run_info
from .plan import Run

RESULT = "study-result.json"


def best_decile(returns: Any) -> float:
    """The mean return of the best 10 % of episodes (at least one): the target minidt train evaluates at for an
    expert-level return (minidt.report.evaluation_targets), and where a study reads a DT's score."""
    r = np.sort(np.asarray(returns, np.float64))
    return float(np.mean(r[-max(1, len(r) // 10):]))


def score(evaluation: dict) -> float:
    """A row's score: success in percent where the environment has a success (Key-to-Door), else the mean
    normalized score, else the mean return."""
    if "success_rate" in evaluation:
        return 100.0 * evaluation["success_rate"]
    return float(evaluation.get("normalized_score_mean", evaluation["return_mean"]))


def row_at(evaluations: list[dict], target: float | None) -> dict:
    """The evaluation row at `target` (None: the one row of a policy that takes no target)."""
    for e in evaluations:
        t = e["target_return"]
        if (t is None and target is None) or (t is not None and target is not None and abs(t - target) < 1e-6):
            return e
    have = [e["target_return"] for e in evaluations]
    raise ValueError(f"no evaluation at target {target} (evaluated at {have})")


def compact(evaluations: list[dict]) -> list[dict]:
    """The evaluation rows without their per-episode lists (study.json stays small)."""
    keep = ("target_return", "return_mean", "return_std", "length_mean", "episodes", "normalized_score_mean",
            "normalized_score_std", "success_rate")
    return [{k: e[k] for k in keep if k in e} for e in evaluations]


def same_settings(run: Run, run_dir: Path) -> None:
    """ValueError when run_dir holds a run made with other settings than `run`'s: a study resumes only its own
    runs."""
    if not (run_dir / "run.json").exists():
        return
    have, want = asdict(read_run_info(run_dir).settings), asdict(run.settings)
    differ = [f"{k} {have.get(k)!r}, not {v!r}" for k, v in want.items() if have.get(k) != v]
    if differ:
        raise ValueError(f"--out: {run_dir} holds a run made with other settings ({'; '.join(differ)}); a study "
                         "resumes only its own runs: use another --out, or delete that run directory")


def train_run(run: Run, run_dir: Path) -> str:
    """Bring run_dir to a finished training run with its own report (metrics.json); -> what was done."""
    from ..runs import latest_checkpoint
    from ..td3bc.train import train_td3bc
    from ..train import train

    trainer = train_td3bc if run.settings.algo == "td3bc" else train
    if (run_dir / "metrics.json").exists():
        return "trained before"
    if (run_dir / "run.json").exists():
        try:
            ckpt = latest_checkpoint(run_dir)
        except ValueError:
            trainer(run.settings, run_dir, progress=False, force=True)
            return "trained again from the start (stopped before its first checkpoint)"
        trainer(run.settings, run_dir, resume=True, progress=False)
        return f"resumed from {ckpt.name}"
    trainer(run.settings, run_dir, progress=False, force=True)  # force: files of a run that never wrote run.json
    return "trained"


def success_share(run: Run) -> float | None:
    """The share of the run's training rows that come from successful episodes (the sampler draws an episode
    with probability proportional to its length), for an environment that ends in success; else None."""
    from ..data.envs import SUCCESS_RETURN, env_name
    from ..train import load_data

    success = SUCCESS_RETURN.get(env_name(run.settings.env))
    if success is None:
        return None
    data, _, _ = load_data(run.settings, progress=False)
    won = np.asarray(data.returns) >= success
    return float(np.sum(data.lengths[won]) / np.sum(data.lengths))


def execute(run: Run, run_dir: Path) -> dict:
    """Train and evaluate one run in run_dir (on one thread); write and return its result: the score at the
    run's target, its evaluations, how its score grew during training, its times, and what was done."""
    from threadpoolctl import threadpool_limits

    from ..report import evaluate_run

    with threadpool_limits(limits=1, user_api="blas"):
        same_settings(run, run_dir)
        status = train_run(run, run_dir)
        summary = read_json(run_dir / "metrics.json")
        target = run.target
        if target == "best-decile":
            target = best_decile(read_run_info(run_dir).dataset_returns)
        if run.episodes:
            evaluations = evaluate_run(run_dir, targets=None if target is None else [target],
                                       episodes=run.episodes, workers=1)
        else:
            evaluations = summary["evaluations"]
        curve = [[r["step"], score(row_at(r["evaluations"], target))]
                 for r in read_metrics(run_dir) if "evaluations" in r]
        final = score(row_at(evaluations, target))
        result = {
            "name": run.name, "tags": run.tags, "seed": run.settings.seed, "label": run.settings.label,
            "steps": run.settings.steps, "target": target, "score": final,
            "curve": curve + [[run.settings.steps, final]], "evaluations": compact(evaluations),
            "dataset": summary["dataset"], "train_seconds": summary["train_seconds"],
            "run_seconds": summary["wall_seconds"], "final_loss": summary.get("final_loss"),
            "rank_correlation": summary.get("rank_correlation"), "success_share": success_share(run),
            "batch_size": run.settings.batch_size, "status": status,
        }
    atomic_write_text(run_dir / RESULT, json.dumps(result, indent=1))
    return result


def child(run: Run, run_dir: Path, messages: Any) -> None:
    """A study's worker process: its own process group (the terminal's Ctrl-C reaches only the runner, which
    passes exactly one SIGINT on), then `execute`. Exit status 0 done, 130 interrupted (checkpoint written),
    1 failed (the message on `messages`)."""
    from ..train import TrainingDiverged, TrainingInterrupted

    os.setpgrp()
    try:
        execute(run, run_dir)
    except (TrainingInterrupted, KeyboardInterrupt):
        sys.exit(130)
    except TrainingDiverged as e:
        messages.put((run.name, f"diverged: {e}"))
        sys.exit(1)
    except Exception as e:  # reported by the runner, with the run's name; the other runs go on
        messages.put((run.name, f"{type(e).__name__}: {e}"))
        sys.exit(1)
