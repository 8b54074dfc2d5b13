"""TD3+BC's training loop: `minidt train --algo td3bc`. The same run directory, signals, logging, checkpoints and
resume as the Decision Transformer's loop (minidt.train), around `td3bc_step` instead of `train_step`:

    data      the run's dataset (delayed rewards if asked), as single transitions (TransitionSampler)
    step      td3bc_step: the critics every step, the actor and the targets every policy_freq-th (agent.py)
    log       every log_every steps: the mean critic loss over the window, the mean actor loss over its actor
              updates (one device-to-host read per window), steps/s
    end       plain rollouts of the actor (report.py), metrics.json and loss.png

The settings it uses: env, dataset, delayed_rewards, steps, batch_size, lr, hidden_size (both hidden layers of
every network), seed, dtype, backend, log_every, checkpoint_every, eval_every, eval_episodes,
final_eval_episodes. The rest of TD3+BC's hyperparameters are TD3BCConfig's (the paper's); run.json records them
under "td3bc". Decision Transformer's own settings (K, warm-up, clipping, dropout, layers, heads) play no part.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

from ..backend import to_numpy
from ..data.transitions import TransitionSampler
from ..evaluate import Preprocess
from ..files import atomic_write_text, read_json
from ..runs import append_jsonl, check_run_dir, record_settings, start_run
from ..settings import TrainSettings
from ..train import TrainingDiverged, TrainingInterrupted, deferred_signals, diverged_message, load_data
from .agent import TD3BC, TD3BCConfig, td3bc_step
from .checkpoint import restore, save_checkpoint
from .report import evaluate_actor, write_report


def build_agent(s: TrainSettings, data: Any, pre: Preprocess) -> TD3BC:
    """The paper's TD3+BC with the run's width, learning rate, seed, dtype and backend."""
    return TD3BC(data.state_dim, data.act_dim, pre.action_low, pre.action_high,
                 TD3BCConfig(hidden=s.hidden_size, lr=s.lr), seed=s.seed, backend=s.backend, dtype=s.dtype)


def train_td3bc(s: TrainSettings, run_dir: "str | os.PathLike", resume: bool = False, progress: bool = True,
                force: bool = False) -> dict:
    """Train TD3+BC on the dataset `s.dataset` of environment `s.env`, evaluate it, write everything into
    run_dir: minidt.train.train's contract (resume, force, TrainingInterrupted, TrainingDiverged), for algo
    td3bc. Returns the final summary (td3bc/report.py)."""
    if s.algo != "td3bc":
        raise ValueError(f"algo: train_td3bc trains TD3+BC (algo 'td3bc'), got {s.algo!r}")
    run_dir = Path(run_dir)
    t_start = time.perf_counter()
    check_run_dir(run_dir, s, resume, force)
    check_continuous_actions(s.env)
    data, pre, _ = load_data(s, progress)
    sampler = TransitionSampler(data, seed=s.seed)
    pre = Preprocess(sampler.state_mean, sampler.state_std, pre.scale, pre.action_low, pre.action_high)
    agent = build_agent(s, data, pre)
    start = 0
    if resume:
        start = restore(run_dir, agent, sampler)
        record_settings(run_dir, s)
    else:
        start_run(run_dir, s, data, pre, force)
        run = read_json(run_dir / "run.json")
        atomic_write_text(run_dir / "run.json", json.dumps({**run, "td3bc": agent.config.to_dict()}, indent=1))
    if progress:
        print(describe(s, data, agent, run_dir, start), flush=True)
    bar = range(start, s.steps)
    if progress:
        from tqdm import tqdm

        bar = tqdm(bar, initial=start, total=s.steps, desc="train td3bc", dynamic_ncols=True)
    xp = agent.backend.xp
    t_log, last_log_step = time.perf_counter(), start
    window_q = window_pi = None  # sums of the losses since the last log, on the device: read when logging
    actor_steps = 0
    try:
        with deferred_signals() as caught, one_blas_thread(agent):
            for step in bar:
                loss_q, loss_pi = td3bc_step(agent, sampler.sample(s.batch_size))
                window_q = loss_q if window_q is None else window_q + loss_q
                if loss_pi is not None:
                    window_pi = loss_pi if window_pi is None else window_pi + loss_pi
                    actor_steps += 1
                done = step + 1
                stop = caught["signal"] is not None
                log = done % s.log_every == 0 or done == start + 1 or done == s.steps or stop
                evaluate = s.eval_every and done % s.eval_every == 0 and done != s.steps and not stop
                checkpoint = done % s.checkpoint_every == 0 or done == s.steps or stop
                if not (log or evaluate or checkpoint):
                    continue
                # One read per window; a NaN or inf in any step of it survives the sum, and is caught before any
                # checkpoint, evaluation or log is written from the weights it left.
                sums = to_numpy(xp.stack((window_q, window_q if window_pi is None else window_pi)))
                critic = float(sums[0]) / (done - last_log_step)
                actor = float(sums[1]) / actor_steps if actor_steps else None
                for what, value in (("critic loss", critic), ("actor loss", actor)):
                    if value is not None and not math.isfinite(value):
                        raise TrainingDiverged(diverged_message(what, value, last_log_step + 1, done, run_dir))
                if log:
                    now = time.perf_counter()
                    rate = (done - last_log_step) / max(now - t_log, 1e-9)
                    append_jsonl(run_dir / "metrics.jsonl", {"step": done, "critic_loss": critic, "actor_loss": actor,
                                                             "steps_per_s": rate, "steps": done - last_log_step})
                    t_log, last_log_step, window_q, window_pi, actor_steps = now, done, None, None, 0
                    if progress:
                        bar.set_postfix(critic=f"{critic:.3g}", actor="-" if actor is None else f"{actor:.3g}",
                                        it_s=f"{rate:.1f}")
                if evaluate:
                    ev = evaluate_actor(agent.actor, s.env, s.eval_episodes, pre)
                    append_jsonl(run_dir / "metrics.jsonl", {"step": done, "evaluations": ev})
                if checkpoint:
                    ckpt = save_checkpoint(run_dir, done, agent, sampler)
                if stop:
                    raise TrainingInterrupted(signal.Signals(caught["signal"]).name, done, ckpt, run_dir)
    finally:
        if progress:
            bar.close()
    train_time = time.perf_counter() - t_start
    evaluations = (evaluate_actor(agent.actor, s.env, s.final_eval_episodes, pre, progress=progress)
                   if s.final_eval_episodes else [])
    return write_report(run_dir, s, data, evaluations, train_time, time.perf_counter() - t_start)


def one_blas_thread(agent: TD3BC) -> Any:
    """OpenBLAS held to one thread during the loop (numpy backend; threadpoolctl, restored after). TD3+BC's products
    are small (256 x 256 by a batch of 256): on the shared 2-core machine a step took 10-14 ms on one thread and
    37-283 ms on two, the threads spinning against other processes (load averages 2.7-5). One thread per run also
    lets runs go side by side, one per core."""
    if agent.backend.name != "numpy":
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def check_continuous_actions(env: str) -> None:
    """ValueError naming --env when the environment's actions are not a Box: TD3+BC's actor outputs a continuous
    action (a discrete-action TD baseline would be another algorithm: discrete CQL or BCQ). Environments that do
    not make are left to minidt.data.gym_spec, which names the problem."""
    import gymnasium as gym

    from ..data import GYM_IDS, env_name

    try:
        e = gym.make(GYM_IDS.get(env_name(env), env))
    except Exception:  # unknown, or a missing dependency: gym_spec reports it in load_data
        return
    try:
        if not isinstance(e.action_space, gym.spaces.Box):
            raise ValueError(f"--env {env}: its action space is {e.action_space}; TD3+BC (--algo td3bc) acts in "
                             "continuous (Box) action spaces")
    finally:
        e.close()


def describe(s: TrainSettings, data: Any, agent: TD3BC, run_dir: Path, start: int) -> str:
    """What a run trains, in three lines: printed as it starts."""
    c = agent.config
    n = sum(m.num_parameters() for m in (agent.actor, agent.critic))
    what = f"resuming at step {start:,} of {s.steps:,}" if start else f"{s.steps:,} steps"
    return (f"training {s.env} on {data.name}: {len(data):,} episodes, {data.num_steps:,} transitions; TD3+BC\n"
            f"actor and twin critics: {n:,} parameters (hidden {c.hidden}, alpha {c.alpha}, discount {c.discount}, "
            f"tau {c.tau}, actor every {c.policy_freq} steps); {what} of batch {s.batch_size} on {s.backend} "
            f"({s.dtype})\nrun directory: {run_dir}")
