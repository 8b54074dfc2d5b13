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
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backend import to_numpy
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

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "TrainSettings":
        if preset not in PRESETS:
            raise ValueError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
        values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=preset, **values)


EVAL_SEED = 10_000  # evaluation episodes are seeded apart from the dataset's (which start at 0)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


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
    for old in sorted((run_dir / "checkpoints").glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


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
    pointer = run_dir / "latest"
    if not pointer.exists():
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir} (expected a file 'latest' written by "
                                "minidt train)")
    return run_dir / pointer.read_text().strip()


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


def train(s: TrainSettings, run_dir: "str | os.PathLike", resume: bool = False, progress: bool = True) -> dict:
    """Train on the dataset `s.dataset` of environment `s.env`, evaluate, write everything into run_dir.
    With resume=True, continue from run_dir's latest checkpoint up to s.steps. Returns the final summary."""
    from .data import SegmentSampler, load_dataset

    run_dir = Path(run_dir)
    t_start = time.perf_counter()
    env_spec = gym_spec(s.env)  # first: an unknown environment fails before any data is generated
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
        run = json.loads((run_dir / "run.json").read_text())
        run["settings"] = asdict(s)  # a resumed run may go on for more steps than first asked
        atomic_write_text(run_dir / "run.json", json.dumps(run, indent=1))
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "run.json", json.dumps(
            {"settings": asdict(s), "env": s.env, "dataset": data.name, "preprocess": pre.to_dict(),
             "dataset_returns": {"min": float(np.min(data.returns)), "max": float(np.max(data.returns)),
                                 "mean": float(np.mean(data.returns)), "episodes": len(data.returns),
                                 "all": [float(r) for r in data.returns]}}, indent=1))
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    net = DataParallel(model, s.workers)  # the one place the model is wrapped: steps and evaluations use net
    net.train()
    bar = range(start, s.steps)
    if progress:
        from tqdm import tqdm

        bar = tqdm(bar, initial=start, total=s.steps, desc="train", dynamic_ncols=True)
    t_log, last_log_step = time.perf_counter(), start
    window = None  # (sum of losses, sum of gradient norms) since the last log, on the device: read when logging
    for step in bar:
        loss, grad_norm = train_step(net, opt, sched, training_batch(sampler, pre, s.batch_size), s.grad_clip)
        pair = model.backend.xp.stack((loss, grad_norm))
        window = pair if window is None else window + pair
        done = step + 1
        log = done % s.log_every == 0 or done == 1 or done == s.steps
        evaluate = s.eval_every and done % s.eval_every == 0 and done != s.steps
        checkpoint = done % s.checkpoint_every == 0 or done == s.steps
        if not (log or evaluate or checkpoint):
            continue
        # One device-to-host read per window; a NaN or inf in any step of it survives the sum. The weights that
        # step left behind are never checkpointed: every checkpoint, evaluation and log step is checked first.
        loss_mean, grad_norm_mean = (float(v) / (done - last_log_step) for v in to_numpy(window))
        for what, value in (("loss", loss_mean), ("gradient norm", grad_norm_mean)):
            if not math.isfinite(value):
                raise TrainingDiverged(diverged_message(what, value, last_log_step + 1, done, run_dir))
        if log:
            now = time.perf_counter()
            rate = (done - last_log_step) / max(now - t_log, 1e-9)
            record = {"step": done, "loss": loss_mean, "lr": sched.get_last_lr()[0], "grad_norm": grad_norm_mean,
                      "steps_per_s": rate, "steps": done - last_log_step}
            t_log, last_log_step, window = now, done, None
            append_jsonl(run_dir / "metrics.jsonl", record)
            if progress:
                bar.set_postfix(loss=f"{loss_mean:.4f}", lr=f"{record['lr']:.1e}", it_s=f"{rate:.1f}")
        if evaluate:
            ev = run_evaluation(net, s, pre, data, s.eval_episodes, progress=False)
            append_jsonl(run_dir / "metrics.jsonl", {"step": done, "evaluations": ev})
            net.train()
        if checkpoint:
            save_checkpoint(run_dir, done, model, opt, sched, sampler)
    train_time = time.perf_counter() - t_start
    evaluations = (run_evaluation(net, s, pre, data, s.final_eval_episodes, progress=progress)
                   if s.final_eval_episodes else [])
    summary = write_report(run_dir, s, data, evaluations, train_time, time.perf_counter() - t_start)
    return summary


def train_step(model: DecisionTransformerModel, opt: AdamW, sched: LinearWarmup, batch: dict[str, Any],
               grad_clip: float) -> tuple[Any, Any]:
    """One optimization step on a batch of K-segments (NumPy arrays, as `training_batch` makes them): forward,
    the masked MSE of the predictions, zero_grad, backward, clip_grad_norm_, AdamW, the warm-up's next lr.
    Returns (loss, grad_norm), 0-d arrays on the model's device: reading one on the host stalls a GPU, so the
    trainer reads them once per logging window. This is what "a step" means everywhere: the trainer,
    DataParallel, tutorial 09 and the coursework's train_step."""
    b = model.backend
    x = {k: None if v is None else b.asarray(v, None if k == "timesteps" else model.dtype) for k, v in batch.items()}
    out = model(**x)
    loss, grads = dt_loss(out, x["states"], x["actions"], x["returns_to_go"], x["attention_mask"])
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
    state = json.loads((ckpt / "trainer_state.json").read_text())
    opt.load_state_dict(unflatten_optimizer_state(load_safetensors(ckpt / "optimizer.safetensors"),
                                                  state["optimizer"]))
    sched.load_state_dict(state["scheduler"])
    sampler.set_state(state["sampler"])
    model.gen.set_state(state["dropout_rng"])
    step = int(state["step"])
    metrics = run_dir / "metrics.jsonl"  # drop what was logged after the checkpoint: those steps run again
    if metrics.exists():
        kept = [line for line in metrics.read_text().splitlines() if json.loads(line)["step"] <= step]
        atomic_write_text(metrics, "".join(line + "\n" for line in kept))
    return step


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


def evaluate_run(run_dir: "str | os.PathLike", env: str | None = None, targets: list[float] | None = None,
                 episodes: int = 20, seed: int = EVAL_SEED, progress: bool = False, workers: int | None = None
                 ) -> list[dict]:
    """Evaluate a finished (or resumed, or interrupted) run's latest model: `minidt evaluate RUN_DIR`.
    env: the run's own by default; targets: the run's (its dataset's range and beyond) by default; workers:
    DataParallel's (None: the usable cores, 1: off)."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").exists():
        raise ValueError(f"RUN_DIR: {run_dir} is not a run directory (expected run.json, written by minidt train)")
    run = json.loads((run_dir / "run.json").read_text())
    env = env or run["env"]
    spec = gym_spec(env)
    model = DecisionTransformerModel.from_pretrained(run_dir, dtype=run["settings"]["dtype"])
    cfg = model.config
    if (cfg.state_dim, cfg.act_dim) != (spec["state_dim"], spec["act_dim"]):
        raise ValueError(f"--env: {env} has observations of size {spec['state_dim']} and actions of size "
                         f"{spec['act_dim']}, but the checkpoint in {run_dir} expects state_dim {cfg.state_dim} and "
                         f"act_dim {cfg.act_dim} (trained on {run['env']})")
    pre = Preprocess.from_dict(run["preprocess"])
    pre.action_low, pre.action_high = spec["action_low"], spec["action_high"]
    if targets is None:
        targets = evaluation_targets(run["dataset_returns"]["all"])
    return evaluate_targets(DataParallel(model, workers), env, targets, episodes, pre, run["settings"]["K"], seed,
                            progress)


def write_report(run_dir: Path, s: TrainSettings, data: Any, evaluations: list[dict], train_time: float,
                 wall_time: float) -> dict:
    from .plots import plot_loss, plot_return_conditioning

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    best = float(np.max(data.returns))
    plot_loss([x for x, _ in losses], [y for _, y in losses], run_dir / "loss.png", f"{s.env} / {data.name}")
    if evaluations:
        plot_return_conditioning(evaluations, run_dir / "return_conditioning.png", best,
                                 f"{s.env} / {data.name}, {s.steps} steps")
    in_range = [e for e in evaluations if e["target_return"] <= best + 1e-9]
    scores = [e["normalized_score_mean"] for e in evaluations if "normalized_score_mean" in e]
    summary = {
        "env": s.env, "dataset": data.name, "steps": s.steps, "train_seconds": train_time,
        "wall_seconds": wall_time, "final_loss": losses[-1][1] if losses else None,
        "best_normalized_score": max(scores) if scores else None,
        "rank_correlation": (spearman([e["target_return"] for e in in_range], [e["return_mean"] for e in in_range])
                             if len(in_range) >= 2 else None),
        "evaluations": evaluations,
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=1))
    return summary


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def gym_spec(env_id: str) -> dict:
    """The gymnasium id, episode length and action bounds of an environment (made once, closed at once)."""
    import gymnasium as gym

    from .data import GYM_IDS, env_name

    name = env_name(env_id)
    gym_id = GYM_IDS.get(name, env_id) if name else env_id
    try:
        env = gym.make(gym_id)
    except gym.error.DependencyNotInstalled as e:
        raise ValueError(f'env {env_id!r} needs MuJoCo: pip install "minidt[mujoco]" ({e})') from e
    except gym.error.Error as e:
        raise ValueError(f"env {env_id!r}: not a gymnasium environment ({e}); expected a short name "
                         f"({', '.join(GYM_IDS)}) or a registered gymnasium id such as Pendulum-v1") from e
    try:
        return {"id": gym_id, "max_episode_steps": env.spec.max_episode_steps or 1000,
                "state_dim": int(np.prod(env.observation_space.shape)),
                "act_dim": int(np.prod(env.action_space.shape)),
                "action_low": np.asarray(env.action_space.low, np.float64),
                "action_high": np.asarray(env.action_space.high, np.float64)}
    finally:
        env.close()
