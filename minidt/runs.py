"""A run directory: what a run writes, what resume and evaluation read back, and the checks that keep it whole.

    config.json, model.safetensors   the latest model (transformers' from_pretrained loads the directory)
    td3bc.safetensors                a TD3+BC run's latest networks instead (minidt.td3bc.checkpoint)
    run.json                         environment, dataset, preprocessing, the training settings
    checkpoints/step-NNNNNNN/        model + optimizer moments + step + every RNG state, for --resume
    latest                           the name of the newest complete checkpoint (written last, atomically)
    metrics.jsonl                    one JSON line per logged step: mean loss and grad norm since the last, lr, steps/s
    metrics.json                     the final summary with the return-conditioning `evaluations`
    loss.png, return_conditioning.png

Every file is written to a temporary name and renamed (`minidt.files`), and `latest` moves only once a checkpoint
is whole, so a crash or a diverged loss never leaves a half checkpoint: resuming continues bit for bit (N + N
steps equal 2N). A run is never overwritten: a directory holding one is refused unless resume or force.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .backend import Backend, to_numpy
from .checkpoint import load_safetensors, read_state, save_safetensors
from .evaluate import Preprocess
from .files import atomic_write_text, read_json
from .model import DecisionTransformerModel
from .optim import AdamW, LinearWarmup
from .settings import TrainSettings

RUN_FILES = ("run.json", "latest", "metrics.jsonl", "metrics.json", "config.json", "model.safetensors", "loss.png",
             "return_conditioning.png", "td3bc.safetensors")  # and checkpoints/
# What a checkpoint's trainer_state.json holds: a Decision Transformer's, or TD3+BC's (minidt.td3bc.checkpoint)
TRAINER_STATE_KEYS = {"dt": ("step", "optimizer", "scheduler", "sampler", "dropout_rng"),
                      "td3bc": ("step", "optimizer", "sampler", "noise_rng", "total_it")}


# --- a new run, or a resumed one ---------------------------------------------------------------------------------

def default_run_dir(s: TrainSettings) -> str:
    """runs/ENV-DATASET-TIME (and -bc, -topX, -nN for BC, the best X %, N generated episodes): where `minidt train`
    writes when --out is not given."""
    what = "".join((f"-{s.algo}" if s.algo != "dt" else "",
                    f"-top{s.top_percent:g}" if s.top_percent < 100 else "",
                    f"-n{s.dataset_episodes}" if s.dataset_episodes else ""))
    name = f"{s.env}-{s.dataset}{what}".replace("/", "_")
    return f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}"


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


def check_run_dir(run_dir: Path, s: TrainSettings, resume: bool, force: bool) -> None:
    """run_dir can take this run: a new one (check_new_run_dir), or, resumed, a run whose latest checkpoint is at
    most s.steps in. Creates nothing."""
    if not resume:
        check_new_run_dir(run_dir, force)
        return
    algo = read_run_info(run_dir).settings.algo
    start = read_trainer_state(latest_checkpoint(run_dir), algo)["step"]
    if s.steps < start:
        raise ValueError(f"--steps: {run_dir} is at step {start} already; --steps is the total to reach "
                         f"(at least {start}), got {s.steps}")


def clear_run(run_dir: Path) -> None:
    """Delete what a run wrote (force): the new run must not mix its checkpoints and metrics with the old one's."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def start_run(run_dir: Path, s: TrainSettings, data: Any, pre: Preprocess, force: bool) -> None:
    """Make the run directory (with force, deleting the old run's files first) and write run.json."""
    if force:
        clear_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "run.json", json.dumps(
        {"settings": asdict(s), "env": s.env, "dataset": data.name, "preprocess": pre.to_dict(),
         "dataset_returns": {"min": float(np.min(data.returns)), "max": float(np.max(data.returns)),
                             "mean": float(np.mean(data.returns)), "episodes": len(data.returns),
                             "all": [float(r) for r in data.returns]}}, indent=1))


def record_settings(run_dir: Path, s: TrainSettings) -> None:
    """Write a resumed run's settings into its run.json: it may go on for more steps than first asked."""
    run = read_run_info(run_dir).raw
    run["settings"] = asdict(s)
    atomic_write_text(run_dir / "run.json", json.dumps(run, indent=1))


def resumed_settings(run_dir: "str | os.PathLike", env: str | None = None, dataset: str | None = None,
                     preset: str | None = None, backend: str | None = None, seed: int | None = None,
                     out: str | None = None, algo: str | None = None, top_percent: float | None = None,
                     dataset_episodes: int | None = None, delayed_rewards: bool | None = None,
                     **changes: Any) -> TrainSettings:
    """The settings `minidt train --resume run_dir` continues with: the run's own. The flags given (None: not
    given) must agree with them (ValueError naming those that do not); `changes` (steps, final_eval_episodes,
    checkpoint_every, workers) change them."""
    from .data import GYM_IDS, env_name

    try:
        s = read_run_info(run_dir).settings
    except ValueError as e:
        raise ValueError(f"--resume: {e}") from None

    def gym_id(name: str) -> str:
        return GYM_IDS.get(env_name(name), name)

    clashes = [f"{flag} {given} (the run's is {have})" for flag, given, have, same in (
        ("--env", env, s.env, lambda a, b: gym_id(a) == gym_id(b)),
        ("--dataset", dataset, s.dataset, lambda a, b: a == b or Path(a).resolve() == Path(b).resolve()),
        ("--preset", preset, s.preset, str.__eq__),
        ("--backend", backend, s.backend, str.__eq__),
        ("--seed", seed, s.seed, int.__eq__),
        ("--out", out, run_dir, lambda a, b: Path(a).resolve() == Path(b).resolve()),
        ("--algo", algo, s.algo, str.__eq__),
        ("--top-percent", top_percent, s.top_percent, float.__eq__),
        ("--dataset-episodes", dataset_episodes, s.dataset_episodes, lambda a, b: a == b),
        ("--delayed-rewards", delayed_rewards, s.delayed_rewards, bool.__eq__),
    ) if given is not None and not same(given, have)]
    if clashes:
        raise ValueError(f"--resume {run_dir}: a resumed run keeps its settings; contradicted by "
                         + ", ".join(clashes))
    for name, value in changes.items():
        if value is not None:
            setattr(s, name, value)
    return s


# --- run.json, and the model beside it ---------------------------------------------------------------------------

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
        # a run.json from before Preprocess kept delayed_rewards: the run's settings say whether it trained on them
        pre = Preprocess.from_dict({"delayed_rewards": train_settings.delayed_rewards, **run["preprocess"]})
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


def load_run(path: "str | os.PathLike", backend: "str | Backend | None" = None,
             ) -> tuple[RunInfo, DecisionTransformerModel]:
    """A run's settings and preprocessing, and its model: the run directory's latest, or that of the
    checkpoints/step-N folder `path` names. What `minidt evaluate` and `minidt.load_policy` start from."""
    run_dir, model_dir = locate_run(path)
    info = read_run_info(run_dir)
    if info.settings.algo == "td3bc":
        raise ValueError(f"RUN_DIR: {path} is a {info.settings.algo} run, which holds no Decision Transformer "
                         "(minidt evaluate evaluates it; minidt.td3bc.checkpoint.load_actor loads its policy)")
    model = DecisionTransformerModel.from_pretrained(model_dir, dtype=info.settings.dtype, backend=backend)
    return info, model


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


def read_trainer_state(ckpt: Path, algo: str = "dt") -> dict:
    """A checkpoint's trainer_state.json, checked for the keys its algorithm's restore reads."""
    path = ckpt / "trainer_state.json"
    state = read_json(path)
    keys = TRAINER_STATE_KEYS["td3bc" if algo == "td3bc" else "dt"]
    if not isinstance(state, dict) or any(k not in state for k in keys) or not isinstance(state["step"], int) \
            or state["step"] < 0:
        raise ValueError(f"--resume: {path} is not a minidt trainer state (expected an object with {', '.join(keys)} "
                         "and a step >= 0)")
    return state


def restore(run_dir: Path, model: DecisionTransformerModel, opt: AdamW, sched: LinearWarmup, sampler: Any) -> int:
    """Load the latest checkpoint into the model, optimizer, schedule, sampler and dropout generator; drop what
    metrics.jsonl logged after it (those steps run again). Returns its step."""
    ckpt = latest_checkpoint(run_dir)
    model.load_state_dict(read_state(ckpt))
    state = read_trainer_state(ckpt)
    opt.load_state_dict(unflatten_optimizer_state(load_safetensors(ckpt / "optimizer.safetensors"),
                                                  state["optimizer"]))
    sched.load_state_dict(state["scheduler"])
    sampler.set_state(state["sampler"])
    model.gen.set_state(state["dropout_rng"])
    step = int(state["step"])
    truncate_metrics(run_dir, step)
    return step


# --- metrics.jsonl -----------------------------------------------------------------------------------------------

def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop what metrics.jsonl logged after `step`: a resumed run runs those steps again."""
    kept = [r for r in read_metrics(run_dir) if r["step"] <= step]
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))


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
