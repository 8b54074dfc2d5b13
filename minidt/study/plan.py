"""What a study runs (`Run`: one training run and where its score is read), and what that costs: the step times
measured on this project's 2-core machine, from which every study's budget was fixed before its first full run,
and the wall time they predict for a study on a given number of cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..settings import TrainSettings

# CPU seconds per training step on one core (OpenBLAS held to one thread, DataParallel off), the quick preset's
# model (hidden 64, 2 layers, 1 head, batch 64), by environment and context K; measured 2026-12-04 on the shared
# 2-core machine under load averages 2.6-4.7 (process time, which load changes less than wall time). Key-to-Door:
# 0.169 (K 40). TD3+BC: 0.0078 s per step (hidden 256, batch 256). These are the numbers the budgets come from.
STEP_SECONDS: dict[str, dict[int, float]] = {
    "pendulum": {1: 0.0057, 5: 0.0163, 20: 0.0623, 50: 0.1930},
    "cartpole": {1: 0.0062, 20: 0.0645, 50: 0.2051},
    "keytodoor": {40: 0.1693},
}
TD3BC_STEP_SECONDS = 0.0078
# Evaluation: CPU seconds per environment step of one episode at context K (batched rollouts): Pendulum, 50
# episodes of 200 steps, 2.4 s at K 20 and 6.2 s at K 50; Key-to-Door, 100 episodes of 39 steps, 2.0 s at K 40.
EVAL_SECONDS_PER_K = 1.2e-5
RUN_OVERHEAD_SECONDS = 3.0  # loading the data, checkpoints, the run's plots (measured: 2-4 s)


@dataclass
class Run:
    """One training run of a study and where its score is read.

    name      unique in the study; its run directory is OUT/runs/NAME
    settings  minidt train's settings, complete (workers 1: one process per core, one thread each)
    tags      what the study's table groups it by ({"policy": "DT", "env": "Pendulum-v1", ...})
    target    the target return the score is read at: a number, "best-decile" (the mean return of the best 10 %
              of the run's dataset episodes, the rule minidt train evaluates at too), or None (a policy that
              takes no target: BC, %BC, TD3+BC)
    episodes  > 0: after training, evaluate at `target` with this many episodes (`minidt evaluate`); 0: read
              the run's own final evaluation (its metrics.json)
    """

    name: str
    settings: TrainSettings
    tags: dict[str, str] = field(default_factory=dict)
    target: "float | str | None" = None
    episodes: int = 0

    def __post_init__(self) -> None:
        if self.settings.workers != 1:
            raise ValueError(f"run {self.name}: a study runs one process per core, each on one thread; expected "
                             f"workers 1, got {self.settings.workers!r}")
        if self.episodes < 0 or (self.episodes == 0 and self.settings.final_eval_episodes == 0):
            raise ValueError(f"run {self.name}: nothing evaluates it (episodes {self.episodes}, "
                             f"final_eval_episodes {self.settings.final_eval_episodes})")


def step_seconds(s: TrainSettings) -> float:
    """The measured CPU seconds of one training step (interpolated in K; scaled by batch size and width from the
    quick preset's, roughly linear in both; an environment not measured counts as Pendulum)."""
    from ..data.envs import env_name

    if s.algo == "td3bc":
        return TD3BC_STEP_SECONDS * (s.batch_size / 256) * (s.hidden_size / 256) ** 2
    table = STEP_SECONDS.get(env_name(s.env) or "", STEP_SECONDS["pendulum"])
    ks = sorted(table)
    per_step = float(np.interp(s.K, ks, [table[k] for k in ks])) if len(ks) > 1 else table[ks[0]] * s.K / ks[0]
    return per_step * (s.batch_size / 64) * (s.hidden_size / 64) ** 2 * s.n_layer / 2


def run_seconds(run: Run) -> float:
    """The predicted seconds of a run on one idle core: its steps, its evaluations, and the overhead."""
    from ..data import gym_spec
    from ..data.envs import SUCCESS_RETURN, env_name

    s = run.settings
    spec = gym_spec(s.env)
    no_target = s.algo != "dt"
    targets = 1 if no_target else 5 if env_name(s.env) in SUCCESS_RETURN else 7
    during = (s.steps - 1) // s.eval_every if s.eval_every else 0
    episodes = (during * s.eval_episodes + s.final_eval_episodes) * targets + run.episodes
    per_episode = spec["max_episode_steps"] * EVAL_SECONDS_PER_K * (1 if s.algo == "td3bc" else s.K)
    return s.steps * step_seconds(s) + episodes * per_episode + RUN_OVERHEAD_SECONDS


def makespan(seconds: list[float], workers: int) -> float:
    """The wall time of jobs of these lengths on `workers` processes, longest first, each to the first free one
    (the order the study runs them in)."""
    free = [0.0] * max(1, workers)
    for s in sorted(seconds, reverse=True):
        free[int(np.argmin(free))] += s
    return max(free)
