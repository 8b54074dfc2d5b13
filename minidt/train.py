"""The training loop, written out: sample K-segments, forward, masked MSE, backward, clip, AdamW, repeat.

A run directory holds everything a run makes:

    config.json, model.safetensors   the latest model (transformers' from_pretrained loads the directory)
    run.json                         environment, dataset, preprocessing, the training settings
    checkpoints/step-NNNNNNN/        model + optimizer moments + step + every RNG state, for --resume
    latest                           the name of the newest complete checkpoint (written last, atomically)
    metrics.jsonl                    one JSON line per logged step: mean loss and grad norm since the last, lr, steps/s
    metrics.json                     the final summary with the return-conditioning `evaluations`
    loss.png, return_conditioning.png

Every file is written to a temporary name and renamed, and `latest` moves only once a checkpoint is whole, so a
crash or a diverged loss never leaves a half checkpoint: resuming continues bit for bit (N + N steps equal 2N).
A run is never overwritten (a directory holding one is refused unless resume or force), and SIGINT or SIGTERM
during the loop finishes the step under way, writes a checkpoint there and raises TrainingInterrupted.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .backend import BACKENDS, DTYPES, Backend, to_numpy
from .checkpoint import atomic_write_text, load_safetensors, read_state, save_safetensors
from .config import DecisionTransformerConfig
from .evaluate import Preprocess, add_normalized_scores, rollout
from .losses import dt_loss
from .model import DecisionTransformerModel
from .optim import AdamW, LinearWarmup, clip_grad_norm_, param_groups_no_decay
from .parallel import DataParallel

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's gym settings (Chen et al. 2021, Table 8 and the released code).
    "paper": dict(K=20, batch_size=64, lr=1e-4, weight_decay=1e-4, warmup_steps=10_000, grad_clip=0.25,
                  dropout=0.1, hidden_size=128, n_layer=3, n_head=1, activation_function="relu", steps=100_000,
                  eval_every=10_000, eval_episodes=10),
    # Minutes on a laptop CPU: a smaller model, a higher learning rate, a short warm-up. These are TrainSettings'
    # defaults, so the preset overrides nothing.
    "quick": {},
}


@dataclass
class TrainSettings:
    """Everything a run needs. The defaults are the "quick" preset."""

    env: str = "Pendulum-v1"
    dataset: str = "full-replay"
    preset: str = "quick"
    steps: int = 2_500
    K: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 0.25
    dropout: float = 0.1
    hidden_size: int = 64
    n_layer: int = 2
    n_head: int = 1
    activation_function: str = "relu"
    eval_every: int = 0  # steps between evaluations during training; 0: only at the end
    eval_episodes: int = 5  # per target during training
    final_eval_episodes: int = 20  # per target at the end; 0: no final evaluation
    log_every: int = 50
    checkpoint_every: int = 500
    seed: int = 0
    dtype: str = "float32"
    backend: str = "numpy"
    workers: int | None = None  # DataParallel replicas (threads); None: the usable cores (numpy), 1: off

    def __post_init__(self) -> None:
        at_least = {"steps": 1, "K": 1, "batch_size": 1, "hidden_size": 1, "n_layer": 1, "n_head": 1, "log_every": 1,
                    "checkpoint_every": 1, "warmup_steps": 0, "eval_every": 0, "eval_episodes": 1,
                    "final_eval_episodes": 0, "seed": 0}
        for name, low in at_least.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {v!r}")
        for name in ("lr", "weight_decay", "grad_clip", "dropout"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < math.inf:
                raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
        if not self.lr > 0 or not self.dropout < 1:
            raise ValueError(f"lr and dropout: expected lr > 0 and dropout < 1, got {self.lr} and {self.dropout}")
        if self.workers is not None and (not isinstance(self.workers, int) or isinstance(self.workers, bool)
                                         or self.workers < 1):
            raise ValueError(f"workers: expected None or an integer >= 1, got {self.workers!r}")
        for name, allowed in (("preset", tuple(PRESETS)), ("dtype", DTYPES), ("backend", BACKENDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "TrainSettings":
        if preset not in PRESETS:
            raise ValueError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
        values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=preset, **values)


EVAL_SEED = 10_000  # evaluation episodes are seeded apart from the dataset's (which start at 0)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM arrived during training: the step under way was finished and checkpointed.
    A KeyboardInterrupt, so a notebook or script that stops on Ctrl-C still does."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path, run_dir: Path):
        super().__init__(f"{signal_name} at step {step}; checkpoint {checkpoint}")
        self.signal_name, self.step, self.checkpoint, self.run_dir = signal_name, step, checkpoint, run_dir


# --- checkpoints -------------------------------------------------------------------------------------------------

def save_checkpoint(run_dir: Path, step: int, model: DecisionTransformerModel, opt: AdamW, sched: LinearWarmup,
                    sampler: Any, keep: int = 2) -> Path:
    """checkpoints/step-N/ in full, then `latest` pointed at it, then the model copied to the run directory."""
    name = f"step-{step:07d}"
    final = run_dir / "checkpoints" / name
    tmp = run_dir / "checkpoints" / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    opt_state = opt.state_dict()
    tensors, meta = flatten_optimizer_state(opt_state)
    save_safetensors(tensors, tmp / "optimizer.safetensors")
    state = {"step": step, "optimizer": meta, "scheduler": sched.state_dict(), "sampler": sampler.get_state(),
             "dropout_rng": model.gen.get_state()}
    atomic_write_text(tmp / "trainer_state.json", json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(run_dir / "latest", f"checkpoints/{name}\n")
    model.save_pretrained(run_dir)
    prune_checkpoints(run_dir, keep)
    return final


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the `keep` checkpoints of highest step (by number: step-10000000 comes after step-9999999),
    never the one `latest` names."""
    pointer = run_dir / "latest"
    latest = pointer.read_text().strip().rsplit("/", 1)[-1] if pointer.is_file() else None
    by_step = sorted((int(m.group(1)), p) for p in (run_dir / "checkpoints").glob("step-*")
                     if (m := re.fullmatch(r"step-(\d+)", p.name)))
    for _, old in by_step[:-keep]:
        if old.name != latest:
            shutil.rmtree(old, ignore_errors=True)


def flatten_optimizer_state(state: dict) -> tuple[dict[str, np.ndarray], dict]:
    """Split an optimizer state dict into its arrays (for safetensors) and the rest (for JSON)."""
    tensors: dict[str, np.ndarray] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, dict):
            return {k: walk(v, f"{path}.{k}") for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if hasattr(x, "shape") and hasattr(x, "dtype") and getattr(x, "ndim", 0) > 0:
            tensors[path] = np.asarray(to_numpy(x))
            return {"__tensor__": path}
        if isinstance(x, np.generic):
            return x.item()
        return x

    return tensors, walk(state, "opt")


def unflatten_optimizer_state(tensors: dict[str, np.ndarray], meta: Any) -> Any:
    if isinstance(meta, dict):
        if set(meta) == {"__tensor__"}:
            return tensors[meta["__tensor__"]]
        return {k: unflatten_optimizer_state(tensors, v) for k, v in meta.items()}
    if isinstance(meta, list):
        return [unflatten_optimizer_state(tensors, v) for v in meta]
    return meta


def latest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint directory `latest` names; ValueError naming the file when there is none or it is broken."""
    pointer = Path(run_dir) / "latest"
    if not pointer.is_file():
        raise ValueError(f"--resume: no checkpoint in {run_dir} (expected a file 'latest' written by minidt train)")
    try:
        ckpt = Path(run_dir) / pointer.read_text().strip()
    except UnicodeDecodeError:
        raise ValueError(f"--resume: {pointer} is not text; expected a line like checkpoints/step-0000500") from None
    if not (ckpt / "trainer_state.json").is_file():
        raise ValueError(f"--resume: {pointer} names {ckpt}, which is not a checkpoint (no trainer_state.json)")
    return ckpt


def read_trainer_state(ckpt: Path) -> dict:
    """A checkpoint's trainer_state.json, checked for the keys restore() reads."""
    path = ckpt / "trainer_state.json"
    state = read_json(path)
    keys = ("step", "optimizer", "scheduler", "sampler", "dropout_rng")
    if not isinstance(state, dict) or any(k not in state for k in keys) or not isinstance(state["step"], int) \
            or state["step"] < 0:
        raise ValueError(f"--resume: {path} is not a minidt trainer state (expected an object with {', '.join(keys)} "
                         "and a step >= 0)")
    return state


# --- run directories ---------------------------------------------------------------------------------------------

RUN_FILES = ("run.json", "latest", "metrics.jsonl", "metrics.json", "config.json", "model.safetensors", "loss.png",
             "return_conditioning.png")  # and checkpoints/


def read_json(path: Path) -> Any:
    """json.loads of a file, every failure one ValueError naming the file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, expected a JSON file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text, expected a JSON file") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({str(e)[:80]})") from None


def run_files(run_dir: Path) -> list[str]:
    """The files of a run (or of a save_pretrained model) that run_dir holds."""
    return [name for name in (*RUN_FILES, "checkpoints") if (Path(run_dir) / name).exists()]


def check_new_run_dir(run_dir: "str | os.PathLike", force: bool = False) -> None:
    """A directory a new run can be written to: not a file, not under one, writable, and holding no run unless
    force. Creates nothing."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out: {run_dir} is a file, expected a directory")
    found = run_files(run_dir)
    if found and not force:
        raise ValueError(f"--out: {run_dir} already holds a run ({', '.join(found)}); continue it with --resume "
                         f"{run_dir}, or replace it with --force")
    existing = run_dir.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out: {run_dir} is under {existing}, which is a file")
    try:  # os.access says yes to root on a read-only mount; making something is the real test
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".minidt-"))
    except OSError as e:
        raise ValueError(f"--out: cannot write in {existing} ({e.strerror})") from None


def clear_run(run_dir: Path) -> None:
    """Delete what a run wrote (force): the new run must not mix its checkpoints and metrics with the old one's."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


@dataclass
class RunInfo:
    """run.json, read back and checked: what evaluation, resume and a policy need."""

    settings: TrainSettings
    env: str
    dataset: str
    pre: Preprocess
    dataset_returns: list[float]  # every episode's return
    raw: dict  # the file as read


def read_run_info(run_dir: "str | os.PathLike") -> RunInfo:
    path = Path(run_dir) / "run.json"
    if not path.exists():
        raise ValueError(f"{run_dir} is not a run directory (no run.json, which minidt train writes)")
    run = read_json(path)
    keys = ("settings", "env", "dataset", "preprocess", "dataset_returns")
    missing = [k for k in keys if not isinstance(run, dict) or k not in run]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}; expected a run.json written by minidt train")
    settings = run["settings"]
    names = {f.name for f in fields(TrainSettings)}
    if not isinstance(settings, dict) or not set(settings) <= names:
        unknown = sorted(set(settings) - names) if isinstance(settings, dict) else settings
        raise ValueError(f"{path}: settings holds unknown fields {unknown}")
    try:
        train_settings = TrainSettings(**settings)
    except ValueError as e:
        raise ValueError(f"{path}: settings: {e}") from None
    try:
        pre = Preprocess.from_dict(run["preprocess"])
        returns = [float(r) for r in run["dataset_returns"]["all"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: preprocess or dataset_returns is malformed ({type(e).__name__}: {e})") from None
    if not returns or not np.isfinite(returns).all():
        raise ValueError(f"{path}: dataset_returns.all must hold finite episode returns")
    return RunInfo(train_settings, str(run["env"]), str(run["dataset"]), pre, returns, run)


def locate_run(path: "str | os.PathLike") -> tuple[Path, Path]:
    """(run directory, model directory) for a run directory (its latest model) or one of its checkpoints/step-N."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"RUN_DIR: {path} is not a directory (expected a run directory or a checkpoints/step-N "
                         "folder of one)")
    if (path / "run.json").exists():
        return path, path
    if path.parent.name == "checkpoints" and (path.parent.parent / "run.json").exists():
        return path.parent.parent, path
    raise ValueError(f"RUN_DIR: {path} is neither a run directory (holding run.json, written by minidt train) nor "
                     "a checkpoints/step-N folder of one")


# --- the loop ----------------------------------------------------------------------------------------------------

def build_model(s: TrainSettings, state_dim: int, act_dim: int, max_ep_len: int) -> DecisionTransformerModel:
    config = DecisionTransformerConfig(
        state_dim=state_dim, act_dim=act_dim, hidden_size=s.hidden_size, n_layer=s.n_layer, n_head=s.n_head,
        n_inner=4 * s.hidden_size, activation_function=s.activation_function, max_ep_len=max_ep_len,
        n_positions=1024, resid_pdrop=s.dropout, embd_pdrop=s.dropout, attn_pdrop=s.dropout, action_tanh=True)
    return DecisionTransformerModel(config, dtype=s.dtype, backend=s.backend, seed=s.seed)


def evaluation_targets(returns: Any, n: int = 5) -> list[float]:
    """Target returns for a dataset with these episode returns: n evenly spanning [min, max]; the mean of its
    best 10% of episodes (its expert-level return: the best episode alone is often an outlier, e.g. a Pendulum
    episode that starts upright); and one beyond the best by a quarter of the range. The paper's questions:
    does the achieved return follow the target, how high can it go, and what happens past the data?"""
    returns = np.sort(np.asarray(returns, np.float64))
    lo, hi = float(returns[0]), float(returns[-1])
    top = float(np.mean(returns[-max(1, len(returns) // 10):]))
    return sorted({*(float(x) for x in np.linspace(lo, hi, n)), top}) + [hi + 0.25 * (hi - lo)]


def spearman(x: list[float], y: list[float]) -> float:
    """Rank correlation of achieved with target return; 0.0 when either side is constant (scipy gives NaN)."""
    from scipy.stats import spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def training_batch(sampler: Any, pre: Preprocess, batch_size: int) -> dict[str, np.ndarray]:
    """A batch of K-segments with actions mapped to [-1, 1], the range of the tanh head (padding stays -10)."""
    batch = sampler.sample(batch_size)
    real = batch["attention_mask"][..., None] > 0
    batch["actions"] = np.where(real, pre.normalize_actions(batch["actions"]), -10.0).astype(np.float32)
    return batch


def train(s: TrainSettings, run_dir: "str | os.PathLike", resume: bool = False, progress: bool = True,
          force: bool = False) -> dict:
    """Train on the dataset `s.dataset` of environment `s.env`, evaluate, write everything into run_dir.
    With resume=True, continue from run_dir's latest checkpoint up to s.steps in all. A run_dir that already holds a
    run is refused unless resume, or force (which deletes that run's files first). Everything that can be checked
    is checked before a dataset is generated or a model built. With progress, prints what it trains and shows
    progress bars. Returns the final summary; raises TrainingInterrupted on SIGINT or SIGTERM during the loop."""
    from .data import SegmentSampler, load_dataset

    run_dir = Path(run_dir)
    t_start = time.perf_counter()
    if resume:
        read_run_info(run_dir)
        start = read_trainer_state(latest_checkpoint(run_dir))["step"]
        if s.steps < start:
            raise ValueError(f"--steps: {run_dir} is at step {start} already; --steps is the total to reach "
                             f"(at least {start}), got {s.steps}")
    else:
        check_new_run_dir(run_dir, force)
    try:
        Backend(s.backend)  # a missing CuPy or GPU is reported before any work
    except RuntimeError as e:
        raise ValueError(f"--backend {s.backend}: {e}") from None
    env_spec = gym_spec(s.env, "--env")  # an unknown environment fails before any data is generated
    data = load_dataset(s.dataset, env=s.env, progress=progress)
    max_ep_len = env_spec["max_episode_steps"]
    if (data.state_dim, data.act_dim) != (env_spec["state_dim"], env_spec["act_dim"]):
        raise ValueError(f"--dataset: {data.name} has states of size {data.state_dim} and actions of size "
                         f"{data.act_dim}, but {s.env} has {env_spec['state_dim']} and {env_spec['act_dim']}; "
                         "pass the --env the dataset was recorded in")
    pre = Preprocess(data.state_mean, data.state_std, data.scale, env_spec["action_low"], env_spec["action_high"])
    sampler = SegmentSampler(data, K=s.K, max_ep_len=max_ep_len, seed=s.seed)
    model = build_model(s, data.state_dim, data.act_dim, max_ep_len)
    opt = AdamW(param_groups_no_decay(model.named_parameters(), s.weight_decay), lr=s.lr, weight_decay=s.weight_decay)
    sched = LinearWarmup(opt, s.warmup_steps)
    start = 0
    if resume:
        start = restore(run_dir, model, opt, sched, sampler)
        run = read_run_info(run_dir).raw
        run["settings"] = asdict(s)  # a resumed run may go on for more steps than first asked
        atomic_write_text(run_dir / "run.json", json.dumps(run, indent=1))
    else:
        if force:
            clear_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "run.json", json.dumps(
            {"settings": asdict(s), "env": s.env, "dataset": data.name, "preprocess": pre.to_dict(),
             "dataset_returns": {"min": float(np.min(data.returns)), "max": float(np.max(data.returns)),
                                 "mean": float(np.mean(data.returns)), "episodes": len(data.returns),
                                 "all": [float(r) for r in data.returns]}}, indent=1))
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
                loss, grad_norm = train_step(net, opt, sched, training_batch(sampler, pre, s.batch_size),
                                             s.grad_clip)
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


def describe(s: TrainSettings, data: Any, model: DecisionTransformerModel, run_dir: Path, start: int) -> str:
    """What a run trains, in three lines: printed as it starts."""
    what = f"resuming at step {start:,} of {s.steps:,}" if start else f"{s.steps:,} steps"
    return (f"training {s.env} on {data.name}: {len(data):,} episodes, {data.num_steps:,} steps; preset {s.preset}\n"
            f"model: {model.num_parameters():,} parameters (hidden {s.hidden_size}, layers {s.n_layer}, heads "
            f"{s.n_head}, context K {s.K}); {what} of batch {s.batch_size} on {s.backend} ({s.dtype})\n"
            f"run directory: {run_dir}")


def constant_action_mse(data: Any, pre: Preprocess) -> float:
    """The loss of the best constant action, the dataset's mean (normalized to [-1, 1]): the mean over action
    dimensions of their variance. A model at or above it has learned nothing from the states."""
    a = pre.normalize_actions(np.concatenate([ep.actions for ep in data.episodes]).astype(np.float64))
    return float(np.mean(np.var(a, axis=0)))


def train_step(model: DecisionTransformerModel, opt: AdamW, sched: LinearWarmup, batch: dict[str, Any],
               grad_clip: float) -> tuple[Any, Any]:
    """One optimization step on a batch of K-segments (NumPy arrays, as `training_batch` makes them): forward,
    the masked MSE of the predictions (cross-entropy of a discrete model's logits), zero_grad, backward,
    clip_grad_norm_, AdamW, the warm-up's next lr.
    Returns (loss, grad_norm), 0-d arrays on the model's device: reading one on the host stalls a GPU, so the
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


def diverged_message(what: str, value: float, first: int, last: int, run_dir: Path) -> str:
    pointer = run_dir / "latest"
    good = f"{pointer.read_text().strip()} in {run_dir}" if pointer.exists() else "none: no checkpoint was written yet"
    when = f"at step {last}" if first == last else f"in steps {first}-{last}"
    return (f"{what} is {value} {when}; stopped. The last good checkpoint, left intact: {good}. "
            "Try a lower learning rate or a longer warm-up.")


def restore(run_dir: Path, model: DecisionTransformerModel, opt: AdamW, sched: LinearWarmup, sampler: Any) -> int:
    ckpt = latest_checkpoint(run_dir)
    model.load_state_dict(read_state(ckpt))
    state = read_trainer_state(ckpt)
    opt.load_state_dict(unflatten_optimizer_state(load_safetensors(ckpt / "optimizer.safetensors"),
                                                  state["optimizer"]))
    sched.load_state_dict(state["scheduler"])
    sampler.set_state(state["sampler"])
    model.gen.set_state(state["dropout_rng"])
    step = int(state["step"])
    # drop what was logged after the checkpoint: those steps run again
    kept = [r for r in read_metrics(run_dir) if r["step"] <= step]
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
    return step


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl's records; a line cut short by a crash mid-write is left out."""
    path = run_dir / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def run_evaluation(model: DecisionTransformerModel, s: TrainSettings, pre: Preprocess, data: Any, episodes: int,
                   progress: bool) -> list[dict]:
    return evaluate_targets(model, s.env, evaluation_targets(data.returns), episodes, pre, s.K, progress=progress)


def evaluate_targets(model: DecisionTransformerModel, env: str, targets: list[float], episodes: int,
                     pre: Preprocess, K: int, seed: int = EVAL_SEED, progress: bool = False) -> list[dict]:
    """rollout() at each target, with normalized scores when the environment has reference returns."""
    from .data import REF_MIN_SCORE, env_name, normalized_score

    results = rollout(model, gym_spec(env)["id"], targets, episodes, pre, K, seed=seed, progress=progress)
    if env_name(env) in REF_MIN_SCORE:
        add_normalized_scores(results, lambda r: normalized_score(env, r))
    return results


def load_run(path: "str | os.PathLike", backend: "str | Backend | None" = None,
             ) -> tuple[RunInfo, DecisionTransformerModel]:
    """A run's settings and preprocessing, and its model: the run directory's latest, or that of the
    checkpoints/step-N folder `path` names. What `minidt evaluate` and `minidt.load_policy` start from."""
    run_dir, model_dir = locate_run(path)
    info = read_run_info(run_dir)
    model = DecisionTransformerModel.from_pretrained(model_dir, dtype=info.settings.dtype, backend=backend)
    return info, model


def evaluate_run(path: "str | os.PathLike", env: str | None = None, targets: list[float] | None = None,
                 episodes: int = 20, seed: int = EVAL_SEED, progress: bool = False, workers: int | None = None
                 ) -> list[dict]:
    """Evaluate a finished (or resumed, or interrupted) run's latest model, or one of its checkpoints/step-N:
    `minidt evaluate PATH`. env: the run's own by default; targets: the run's (evaluation_targets of its
    dataset's returns) by default; workers: DataParallel's (None: the usable cores, 1: off)."""
    if episodes < 1:
        raise ValueError(f"--episodes: expected at least 1, got {episodes}")
    if targets is not None and not (targets and np.isfinite(targets).all()):
        raise ValueError(f"--targets: expected finite numbers, got {targets}")
    if seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, got {seed}")
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


def write_report(run_dir: Path, s: TrainSettings, data: Any, pre: Preprocess, evaluations: list[dict],
                 train_time: float, wall_time: float) -> dict:
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


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def gym_spec(env_id: str, name: str = "env") -> dict:
    """The gymnasium id, episode length and action bounds of an environment (made once, closed at once).
    ValueError, naming the argument `name`, for an unknown environment or one whose observations or actions are not
    continuous vectors (Box): minidt's Decision Transformer predicts continuous actions."""
    import gymnasium as gym

    from .data import GYM_IDS, env_name

    short = env_name(env_id)
    gym_id = GYM_IDS.get(short, env_id) if short else env_id
    try:
        env = gym.make(gym_id)
    except gym.error.DependencyNotInstalled as e:
        raise ValueError(f'{name} {env_id}: needs MuJoCo: pip install "minidt[mujoco]" ({e})') from None
    except (gym.error.Error, ModuleNotFoundError, TypeError, AttributeError) as e:
        raise ValueError(f"{name} {env_id}: not a gymnasium environment ({e}); expected a short name "
                         f"({', '.join(GYM_IDS)}) or a registered gymnasium id such as Pendulum-v1") from None
    try:
        for what, space, does in (("action", env.action_space, "predicts continuous actions"),
                                  ("observation", env.observation_space, "reads continuous observations")):
            if not isinstance(space, gym.spaces.Box):
                raise ValueError(f"{name} {env_id}: its {what} space is {space}; minidt's Decision Transformer "
                                 f"{does} (a Box space)")
        if not (np.isfinite(env.action_space.low).all() and np.isfinite(env.action_space.high).all()):
            raise ValueError(f"{name} {env_id}: its action space {env.action_space} is unbounded; minidt maps the "
                             "model's tanh output onto finite action bounds")
        return {"id": gym_id, "max_episode_steps": env.spec.max_episode_steps or 1000,
                "state_dim": int(np.prod(env.observation_space.shape)),
                "act_dim": int(np.prod(env.action_space.shape)),
                "action_low": np.asarray(env.action_space.low, np.float64),
                "action_high": np.asarray(env.action_space.high, np.float64)}
    finally:
        env.close()
