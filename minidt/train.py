"""The training loop, written out: sample K-segments, forward, masked MSE, backward, clip, AdamW, repeat.

`train_step` is one step, what "a step" means everywhere (the trainer, DataParallel, tutorial 09, the coursework).
`train` runs it in a loop; around the loop, not inside it: the run directory and its checkpoints (`minidt.runs`),
the evaluations and the report (`minidt.report`), and the signals. SIGINT or SIGTERM during the loop finishes the
step under way, writes a checkpoint there and raises TrainingInterrupted; a NaN or inf loss raises TrainingDiverged
and leaves the last good checkpoint as it was. Resuming continues bit for bit (N + N steps equal 2N).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .backend import Backend, to_numpy
from .config import DecisionTransformerConfig
from .evaluate import Preprocess
from .losses import dt_loss
from .model import DecisionTransformerModel
from .optim import AdamW, LinearWarmup, clip_grad_norm_, param_groups_no_decay
from .parallel import DataParallel
from .report import run_evaluation, write_report
from .runs import append_jsonl, check_run_dir, record_settings, restore, save_checkpoint, start_run
from .settings import TrainSettings


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM arrived during training: the step under way was finished and checkpointed.
    A KeyboardInterrupt, so a notebook or script that stops on Ctrl-C still does."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path, run_dir: Path):
        super().__init__(f"{signal_name} at step {step}; checkpoint {checkpoint}")
        self.signal_name, self.step, self.checkpoint, self.run_dir = signal_name, step, checkpoint, run_dir


def train_step(model: DecisionTransformerModel, opt: AdamW, sched: LinearWarmup, batch: dict[str, Any],
               grad_clip: float) -> tuple[Any, Any]:
    """One optimization step on a batch of K-segments (NumPy arrays, as `training_batch` makes them): forward,
    the masked MSE of the predictions (cross-entropy of a discrete model's logits), zero_grad, backward,
    clip_grad_norm_, AdamW, the warm-up's next lr. Returns (loss, grad_norm), 0-d arrays on the model's device: reading one on the host stalls a GPU, so the
    trainer reads them once per logging window. This is what "a step" means everywhere: the trainer,
    DataParallel, tutorial 09 and the coursework's train_step."""
    b = model.backend
    x = {k: None if v is None else b.asarray(v, None if k == "timesteps" else model.dtype) for k, v in batch.items()}
    out = model(**x)
    loss, grads = dt_loss(out, x["states"], x["actions"], x["returns_to_go"], x["attention_mask"],
                          discrete=model.config.discrete_actions)  # discrete: cross-entropy on the logits
    model.zero_grad()
    model.backward(*grads)
    grad_norm = clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    return loss, grad_norm


def build_model(s: TrainSettings, state_dim: int, act_dim: int, max_ep_len: int,
                discrete: bool = False) -> DecisionTransformerModel:
    """The run's model: continuous actions through a tanh head, or discrete ones (act_dim of them) as logits."""
    config = DecisionTransformerConfig(
        state_dim=state_dim, act_dim=act_dim, hidden_size=s.hidden_size, n_layer=s.n_layer, n_head=s.n_head,
        n_inner=4 * s.hidden_size, activation_function=s.activation_function, max_ep_len=max_ep_len,
        n_positions=1024, resid_pdrop=s.dropout, embd_pdrop=s.dropout, attn_pdrop=s.dropout,
        action_tanh=not discrete, **({"discrete_actions": True} if discrete else {}))
    return DecisionTransformerModel(config, dtype=s.dtype, backend=s.backend, seed=s.seed)


def training_batch(sampler: Any, pre: Preprocess, batch_size: int, discrete: bool = False) -> dict[str, np.ndarray]:
    """A batch of K-segments with actions mapped to [-1, 1], the range of the tanh head (padding stays -10);
    discrete actions stay one-hot rows. Behaviour cloning (pre.zero_returns): the return input is all zeros."""
    batch = sampler.sample(batch_size)
    if not discrete:
        real = batch["attention_mask"][..., None] > 0
        batch["actions"] = np.where(real, pre.normalize_actions(batch["actions"]), -10.0).astype(np.float32)
    if pre.zero_returns:
        batch["returns_to_go"] = np.zeros_like(batch["returns_to_go"])
    return batch


def train(s: TrainSettings, run_dir: "str | os.PathLike", resume: bool = False, progress: bool = True,
          force: bool = False) -> dict:
    """Train on the dataset `s.dataset` of environment `s.env`, evaluate, write everything into run_dir.
    With resume=True, continue from run_dir's latest checkpoint up to s.steps in all. A run_dir that already holds a
    run is refused unless resume, or force (which deletes that run's files first). Everything that can be checked
    is checked before a dataset is generated or a model built. With progress, prints what it trains and shows
    progress bars. Returns the final summary; raises TrainingInterrupted on SIGINT or SIGTERM during the loop."""
    from .data import SegmentSampler

    if s.algo == "td3bc":
        raise ValueError(f"algo: minidt.train.train trains a Decision Transformer (algo 'dt'), got {s.algo!r}; "
                         "TD3+BC trains with minidt.td3bc.train.train_td3bc")
    run_dir = Path(run_dir)
    t_start = time.perf_counter()
    check_run_dir(run_dir, s, resume, force)
    data, pre, max_ep_len = load_data(s, progress)
    sampler = SegmentSampler(data, K=s.K, max_ep_len=max_ep_len, seed=s.seed)
    model = build_model(s, data.state_dim, data.act_dim, max_ep_len, data.discrete_actions)
    opt = AdamW(param_groups_no_decay(model.named_parameters(), s.weight_decay), lr=s.lr, weight_decay=s.weight_decay)
    sched = LinearWarmup(opt, s.warmup_steps)
    start = 0
    if resume:
        start = restore(run_dir, model, opt, sched, sampler)
        record_settings(run_dir, s)
    else:
        start_run(run_dir, s, data, pre, force)
    if progress:
        print(describe(s, data, model, run_dir, start), flush=True)
    net = DataParallel(model, s.workers)  # the one place the model is wrapped: steps and evaluations use net
    net.train()
    bar = range(start, s.steps)
    if progress:
        from tqdm import tqdm

        bar = tqdm(bar, initial=start, total=s.steps, desc="train", dynamic_ncols=True)
    t_log, last_log_step = time.perf_counter(), start
    window = None  # (sum of losses, sum of gradient norms) since the last log, on the device: read when logging
    try:
        with deferred_signals() as caught:
            for step in bar:
                batch = training_batch(sampler, pre, s.batch_size, data.discrete_actions)
                loss, grad_norm = train_step(net, opt, sched, batch, s.grad_clip)
                pair = model.backend.xp.stack((loss, grad_norm))
                window = pair if window is None else window + pair
                done = step + 1
                stop = caught["signal"] is not None
                log = done % s.log_every == 0 or done == start + 1 or done == s.steps or stop
                evaluate = s.eval_every and done % s.eval_every == 0 and done != s.steps and not stop
                checkpoint = done % s.checkpoint_every == 0 or done == s.steps or stop
                if not (log or evaluate or checkpoint):
                    continue
                # One device-to-host read per window; a NaN or inf in any step of it survives the sum. The weights
                # that step left behind are never checkpointed: every checkpoint, evaluation and log step is
                # checked first.
                loss_mean, grad_norm_mean = (float(v) / (done - last_log_step) for v in to_numpy(window))
                for what, value in (("loss", loss_mean), ("gradient norm", grad_norm_mean)):
                    if not math.isfinite(value):
                        raise TrainingDiverged(diverged_message(what, value, last_log_step + 1, done, run_dir))
                if log:
                    now = time.perf_counter()
                    rate = (done - last_log_step) / max(now - t_log, 1e-9)
                    record = {"step": done, "loss": loss_mean, "lr": sched.get_last_lr()[0],
                              "grad_norm": grad_norm_mean, "steps_per_s": rate, "steps": done - last_log_step}
                    t_log, last_log_step, window = now, done, None
                    append_jsonl(run_dir / "metrics.jsonl", record)
                    if progress:
                        bar.set_postfix(loss=f"{loss_mean:.4f}", lr=f"{record['lr']:.1e}", it_s=f"{rate:.1f}")
                if evaluate:
                    ev = run_evaluation(net, s, pre, data, s.eval_episodes, progress=False)
                    append_jsonl(run_dir / "metrics.jsonl", {"step": done, "evaluations": ev})
                    net.train()
                if checkpoint:
                    ckpt = save_checkpoint(run_dir, done, model, opt, sched, sampler)
                if stop:
                    raise TrainingInterrupted(signal.Signals(caught["signal"]).name, done, ckpt, run_dir)
    finally:
        if progress:
            bar.close()
    train_time = time.perf_counter() - t_start
    evaluations = (run_evaluation(net, s, pre, data, s.final_eval_episodes, progress=progress)
                   if s.final_eval_episodes else [])
    summary = write_report(run_dir, s, data, pre, evaluations, train_time, time.perf_counter() - t_start)
    return summary


def load_data(s: TrainSettings, progress: bool) -> tuple[Any, Preprocess, int]:
    """The run's dataset (its best s.top_percent % of episodes; its rewards delayed to each episode's last step
    with s.delayed_rewards), its preprocessing and the environment's episode length. The backend and the
    environment are checked first: a missing CuPy or an unknown environment fails before any data is generated; a
    dataset whose states or actions do not fit the environment is one error."""
    from .data import TIERS, delay_rewards, gym_spec, load_dataset

    try:
        Backend(s.backend)
    except RuntimeError as e:
        raise ValueError(f"--backend {s.backend}: {e}") from None
    env_spec = gym_spec(s.env, "--env")
    if s.dataset_episodes is not None and s.dataset not in TIERS:
        raise ValueError(f"--dataset-episodes: the size of a generated tier ({', '.join(TIERS)}), got it with "
                         f"--dataset {s.dataset}")
    data = load_dataset(s.dataset, env=s.env, episodes=s.dataset_episodes, progress=progress,
                        n_actions=env_spec["act_dim"] if env_spec["discrete"] else None)
    check_fits(data, env_spec, s.env)
    if s.delayed_rewards:
        data = delay_rewards(data)
    if s.top_percent < 100:
        data = data.top_percent(s.top_percent)
    pre = Preprocess(data.state_mean, data.state_std, data.scale, env_spec["action_low"], env_spec["action_high"],
                     zero_returns=s.algo == "bc", delayed_rewards=s.delayed_rewards)
    return data, pre, env_spec["max_episode_steps"]


def check_fits(data: Any, env_spec: dict, env: str) -> None:
    """The dataset's states and actions are the environment's: sizes, and discrete or continuous actions."""
    def actions(discrete: bool, n: int) -> str:
        return f"{n} discrete actions" if discrete else f"continuous actions of size {n}"

    have, want = actions(data.discrete_actions, data.act_dim), actions(env_spec["discrete"], env_spec["act_dim"])
    if data.state_dim != env_spec["state_dim"] or have != want:
        raise ValueError(f"--dataset: {data.name} has states of size {data.state_dim} and {have}, but {env} has "
                         f"states of size {env_spec['state_dim']} and {want}; pass the --env the dataset was "
                         "recorded in")


@contextlib.contextmanager
def deferred_signals() -> Iterator[dict]:
    """SIGINT and SIGTERM set caught["signal"] instead of interrupting: the loop finishes the step under way (one
    cut in half would leave the weights half updated), checkpoints it and stops. A second signal interrupts at once
    (checkpoints are written atomically: the last whole one stays). Only the main thread can take signals."""
    caught: dict = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum: int, frame: Any) -> None:
        if caught["signal"] is not None:
            raise KeyboardInterrupt
        caught["signal"] = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does (on the main thread; elsewhere nothing changes): `minidt
    train` stops alike on both outside the loop too, while it loads data or writes the report."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def describe(s: TrainSettings, data: Any, model: DecisionTransformerModel, run_dir: Path, start: int) -> str:
    """What a run trains, in three lines: printed as it starts."""
    what = f"resuming at step {start:,} of {s.steps:,}" if start else f"{s.steps:,} steps"
    return (f"training {s.label} in {s.env} on {data.name}: {len(data):,} episodes, {data.num_steps:,} "
            f"steps; preset {s.preset}\n"
            f"model: {model.num_parameters():,} parameters (hidden {s.hidden_size}, layers {s.n_layer}, heads "
            f"{s.n_head}, context K {s.K}); {what} of batch {s.batch_size} on {s.backend} ({s.dtype})\n"
            f"run directory: {run_dir}")


def diverged_message(what: str, value: float, first: int, last: int, run_dir: Path) -> str:
    pointer = run_dir / "latest"
    good = f"{pointer.read_text().strip()} in {run_dir}" if pointer.exists() else "none: no checkpoint was written yet"
    when = f"at step {last}" if first == last else f"in steps {first}-{last}"
    return (f"{what} is {value} {when}; stopped. The last good checkpoint, left intact: {good}. "
            "Try a lower learning rate or a longer warm-up.")
