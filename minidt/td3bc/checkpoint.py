"""A TD3+BC run's files: its checkpoints (what --resume continues from, bit for bit) and its latest networks.

    td3bc.safetensors                        the four networks (actor., critic., actor_target., critic_target.)
    checkpoints/step-N/td3bc.safetensors     the same, at step N
    checkpoints/step-N/optimizer.safetensors both Adams' moments (opt.actor..., opt.critic...)
    checkpoints/step-N/trainer_state.json    step, the optimizers' steps and settings, the transition sampler's and
                                             the smoothing noise's generator states, total_it (the delayed updates)

Written as a Decision Transformer run's are (minidt.runs): the checkpoint in a hidden folder renamed into place,
then `latest`, then the networks at the run's top level; the two newest checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..backend import Backend, Generator, get_backend
from ..checkpoint import load_safetensors, save_safetensors
from ..files import atomic_write_text
from ..runs import (flatten_optimizer_state, latest_checkpoint, locate_run, prune_checkpoints, read_run_info,
                    read_trainer_state, truncate_metrics, unflatten_optimizer_state)
from .agent import TD3BC
from .networks import Actor

WEIGHTS = "td3bc.safetensors"


def save_checkpoint(run_dir: Path, step: int, agent: TD3BC, sampler: Any, keep: int = 2) -> Path:
    """checkpoints/step-N/ in full, then `latest` pointed at it, then the networks copied to the run directory."""
    name = f"step-{step:07d}"
    final = run_dir / "checkpoints" / name
    tmp = run_dir / "checkpoints" / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = agent.state_dict()
    save_safetensors(weights, tmp / WEIGHTS)
    tensors, meta = flatten_optimizer_state({"actor": agent.actor_opt.state_dict(),
                                             "critic": agent.critic_opt.state_dict()})
    save_safetensors(tensors, tmp / "optimizer.safetensors")
    state = {"step": step, "optimizer": meta, "sampler": sampler.get_state(), "noise_rng": agent.noise.get_state(),
             "total_it": agent.total_it}
    atomic_write_text(tmp / "trainer_state.json", json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(run_dir / "latest", f"checkpoints/{name}\n")
    save_safetensors(weights, run_dir / WEIGHTS)
    prune_checkpoints(run_dir, keep)
    return final


def restore(run_dir: Path, agent: TD3BC, sampler: Any) -> int:
    """Load the latest checkpoint into the agent (networks, optimizers, noise, total_it) and the sampler; drop what
    metrics.jsonl logged after it. Returns its step."""
    ckpt = latest_checkpoint(run_dir)
    state = read_trainer_state(ckpt, "td3bc")
    agent.load_state_dict(load_safetensors(ckpt / WEIGHTS))
    optimizers = unflatten_optimizer_state(load_safetensors(ckpt / "optimizer.safetensors"), state["optimizer"])
    agent.actor_opt.load_state_dict(optimizers["actor"])
    agent.critic_opt.load_state_dict(optimizers["critic"])
    sampler.set_state(state["sampler"])
    agent.noise.set_state(state["noise_rng"])
    agent.total_it = int(state["total_it"])
    step = int(state["step"])
    truncate_metrics(run_dir, step)
    return step


def load_actor(path: "str | os.PathLike", backend: "str | Backend | None" = None) -> tuple[Any, Actor]:
    """A TD3+BC run's policy: (its RunInfo, its actor), from the run directory (the latest networks) or one of its
    checkpoints/step-N folders. The actor acts on states normalized by info.pre.state_mean / state_std."""
    run_dir, weights_dir = locate_run(path)
    info = read_run_info(run_dir)
    s = info.settings
    if s.algo != "td3bc":
        raise ValueError(f"RUN_DIR: {path} is a {s.algo} run, not a TD3+BC one")
    state = load_safetensors(Path(weights_dir) / WEIGHTS)
    weights = {k.removeprefix("actor."): v for k, v in state.items() if k.startswith("actor.")}
    b = get_backend(backend)
    state_dim, act_dim = len(info.pre.state_mean), len(info.pre.action_low)
    actor = Actor(state_dim, act_dim, info.pre.action_low, info.pre.action_high, s.hidden_size, gen=Generator(0, b),
                  backend=b, dtype=s.dtype)
    want = {name: p.shape for name, p in actor.named_parameters()}
    if {name: tuple(w.shape) for name, w in weights.items()} != want:
        raise ValueError(f"{Path(weights_dir) / WEIGHTS}: expected the actor's weights {want} (actor.*), got "
                         f"{ {name: tuple(w.shape) for name, w in weights.items()} }")
    for name, p in actor.named_parameters():
        p.data = b.asarray(weights[name], dtype=s.dtype)
    return info, actor
