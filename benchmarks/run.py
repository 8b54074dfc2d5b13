"""minidt against transformers' DecisionTransformerModel on torch eager: one process, interleaved A B A B.

    python -m benchmarks.run                 the full run (15-30 minutes on 2 shared cores; item 3 is most of it)
    python -m benchmarks.run --quick         a smoke run: 2 torch episodes, 3 eval rounds, fewer scaling points
    python -m benchmarks.run --json out.json --only train,infer

Every time is the median of >= 5 rounds after warm-up; within a round minidt runs, then torch, so a noisy
neighbour slows both and the ratio stays fair. Both run float32 on the same number of threads (torch
set_num_threads(2); minidt one DataParallel worker per core, or NumPy's OpenBLAS on every core where it runs
unsplit: 2 on these machines). Ratios are minidt / torch:
lower is better. Items (the issue's numbering):

    1 train   one training step of the paper's config (minidt.train.train_step on DataParallel, as the trainer
              runs it): forward, masked-MSE action loss, backward, clip_grad_norm_ 0.25, AdamW; a second row with
              one replica (--workers 1); GFLOP/s against the sgemm rate at the same GEMM shapes
    2 infer   one rollout step at batch 1, K 20: model.get_action against the example's full forward under
              no_grad (torch); the full forward on both sides as a second row
    3 eval    100 Pendulum-v1 episodes at one target: minidt's vectorized rollout (on DataParallel, as minidt
              evaluate runs it) against the transformers example's loop (one env, get_action once per step);
              torch may run fewer episodes, scaled linearly
    4 memory  peak extra memory of a training step: tracemalloc (NumPy) against torch's profiler accounting
    5 scaling training step time against batch size and context length K
    6 gpu     on the cupy backend against torch CUDA, when both exist: item 1's step (goal <= 1.0), a larger step
              (hidden 512, 6 layers, 8 heads, K 20, B 256; goal <= 1.2), item 2's get_action (goal <= 1.0)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout, too

import minidt  # noqa: E402
from minidt import DecisionTransformerConfig, DecisionTransformerModel  # noqa: E402
from minidt import DataParallel  # noqa: E402
from minidt.optim import AdamW, LinearWarmup  # noqa: E402
from minidt.parity import make_inputs  # noqa: E402
from minidt.train import train_step  # noqa: E402

THREADS = 2
PAPER = dict(hidden_size=128, n_layer=3, n_head=1, activation_function="relu", state_dim=11, act_dim=3,
             max_ep_len=1000, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
LR, WEIGHT_DECAY, MAX_NORM = 1e-4, 1e-4, 0.25  # the paper's trainer


# --- timing ---------------------------------------------------------------------------------------------------
def interleaved(fa: Callable[[], Any], fb: Callable[[], Any], rounds: int = 5, warmup: int = 2,
                min_round: float = 0.2) -> dict:
    """Median seconds per call of fa and fb, timed A B A B ... Each round repeats a call n times (n chosen in
    warm-up so that a round lasts >= min_round seconds) and counts its mean."""
    n = 1
    for _ in range(warmup):
        t0 = time.perf_counter()
        fa()
        ta = time.perf_counter() - t0
        t0 = time.perf_counter()
        fb()
        tb = time.perf_counter() - t0
        n = max(1, int(min_round / max(min(ta, tb), 1e-6)))
    ta, tb = [], []
    for _ in range(rounds):
        for f, out in ((fa, ta), (fb, tb)):
            gc.collect()
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            out.append((time.perf_counter() - t0) / n)
    a, b = statistics.median(ta), statistics.median(tb)
    return {"minidt_s": a, "torch_s": b, "ratio": a / b, "minidt_rounds": ta, "torch_rounds": tb, "calls": n}


def spread(rounds: list[float]) -> float:
    """(max - min) / median of a list of round times: how noisy the machine was."""
    return (max(rounds) - min(rounds)) / statistics.median(rounds)


# --- the two models --------------------------------------------------------------------------------------------
def models(config: DecisionTransformerConfig, seed: int = 0, device: str = "cpu", backend: str = "numpy"):
    """minidt and transformers models with the same float32 weights, in train mode."""
    from minidt.parity import reference_model

    ours = DecisionTransformerModel(config, dtype="float32", seed=seed, backend=backend)
    ref = reference_model(config, ours.state_dict(), "float32").to(device)
    return ours, ref


def batch(config: DecisionTransformerConfig, B: int, K: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A training batch: random left-padded K-segments, float32 (timesteps int64)."""
    x = make_inputs(config, B, K, seed)
    x["timesteps"] = x["timesteps"] % min(config.max_ep_len, 1000)
    return {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in x.items()}


def to_torch(x: dict[str, np.ndarray], device: str = "cpu") -> dict:
    import torch

    return {k: torch.from_numpy(v).to(device) for k, v in x.items()}


def minidt_train_step(model, opt, x: dict) -> Callable[[], Any]:
    """minidt.train.train_step, the trainer's step (no warm-up here: LinearWarmup(opt, 1) keeps lr constant)."""
    sched = LinearWarmup(opt, 1)
    return lambda: train_step(model, opt, sched, x, MAX_NORM)


def torch_train_step(ref, opt, x: dict) -> Callable[[], Any]:
    """The original Decision Transformer trainer's step: MSE over the unpadded actions."""
    import torch

    act_dim = ref.config.act_dim

    def step():
        _, action_preds, _ = ref(**x, return_dict=False)
        real = x["attention_mask"].reshape(-1) > 0
        a_hat = action_preds.reshape(-1, act_dim)[real]
        a = x["actions"].reshape(-1, act_dim)[real]
        loss = torch.mean((a_hat - a) ** 2)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), MAX_NORM)
        opt.step()
        return loss

    return step


def train_pair(config: DecisionTransformerConfig, B: int, K: int, device: str = "cpu", backend: str = "numpy",
               workers: int | None = None):
    """minidt's training step (as the trainer runs it: DataParallel, `workers` replicas, default the usable cores
    on the numpy backend) and torch's, on the same weights and batch."""
    import torch

    ours, ref = models(config, device=device, backend=backend)
    ours.train()
    ref.train()
    x = batch(config, B, K)
    if backend != "numpy":
        b = minidt.get_backend(backend)
        x_ours = {k: (None if v is None else b.asarray(v)) for k, v in x.items()}
    else:
        x_ours = x
    fa = minidt_train_step(DataParallel(ours, workers), AdamW(ours.parameters(), lr=LR, weight_decay=WEIGHT_DECAY),
                           x_ours)
    fb = torch_train_step(ref, torch.optim.AdamW(ref.parameters(), lr=LR, weight_decay=WEIGHT_DECAY),
                          to_torch(x, device))
    return fa, fb


# --- item 1: training step and GFLOP/s --------------------------------------------------------------------------
def gemm_shapes(config: DecisionTransformerConfig, B: int, K: int) -> list[tuple[int, int, int, int]]:
    """Every matrix product of one training step as (batch, M, K, N): forward, then backward (dx and dW of each
    affine map; dprobs, dv, dq, dk of attention). Embedding gathers, elementwise work and the act_dim-wide
    action head count too (as GEMMs), though they are negligible."""
    C, H, L = config.hidden_size, config.n_head, config.n_layer
    D, T, N = C // H, 3 * K, B * 3 * K
    inner = config.inner_dim
    fwd = []
    for I, O, M in ((1, C, B * K), (config.state_dim, C, B * K), (config.act_dim, C, B * K)):
        fwd.append((1, M, I, O))  # the three token embeddings
    for _ in range(L):
        fwd += [(1, N, C, 3 * C), (B * H, T, D, T), (B * H, T, T, D), (1, N, C, C), (1, N, C, inner),
                (1, N, inner, C)]
    fwd.append((1, B * K, C, config.act_dim))  # predict_action: the loss uses only it
    bwd = []
    for (b, M, I, O) in fwd:
        bwd += [(b, M, O, I), (b, I, M, O)]  # dx = dout @ W^T, dW = x^T @ dout
    return fwd + bwd


def sgemm_rate(shapes: list[tuple[int, int, int, int]], lib: str, reps: int = 5) -> tuple[float, float]:
    """(seconds, GFLOP/s) of just the step's GEMMs on contiguous float32 operands, the best of `reps` passes."""
    flops = sum(2.0 * b * m * k * n for b, m, k, n in shapes)
    rng = np.random.default_rng(0)
    ops = []
    for b, m, k, n in shapes:
        a, w = rng.standard_normal((b, m, k), np.float32), rng.standard_normal((b, k, n), np.float32)
        if b == 1:
            a, w = a[0], w[0]
        if lib == "torch":
            import torch

            a, w = torch.from_numpy(a), torch.from_numpy(w)
        ops.append((a, w))
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        for a, w in ops:
            a @ w
        best = min(best, time.perf_counter() - t0)
    return best, flops / best / 1e9


def item_train(args) -> dict:
    config = DecisionTransformerConfig(**PAPER)
    B, K = 64, 20
    fa, fb = train_pair(config, B, K)
    r = interleaved(fa, fb, args.rounds)
    r["one_replica"] = interleaved(*train_pair(config, B, K, workers=1), args.rounds)  # --workers 1
    shapes = gemm_shapes(config, B, K)
    flops = sum(2.0 * b * m * k * n for b, m, k, n in shapes)
    t_np, rate_np = sgemm_rate(shapes, "numpy")
    t_torch, rate_torch = sgemm_rate(shapes, "torch")
    r.update(gflop=flops / 1e9, minidt_gflops=flops / r["minidt_s"] / 1e9, torch_gflops=flops / r["torch_s"] / 1e9,
             sgemm_numpy_gflops=rate_np, sgemm_torch_gflops=rate_torch, sgemm_numpy_s=t_np, sgemm_torch_s=t_torch)
    return r


# --- item 2: batch-1 inference ------------------------------------------------------------------------------------
def infer_pair(config: DecisionTransformerConfig, device: str = "cpu", backend: str = "numpy"):
    """Item 2's two sides, eval mode, batch 1, K 20, a full window (as in the middle of an episode): minidt's model
    and its inputs, and torch's rollout step (the example's get_action: the full forward under no_grad)."""
    import torch

    ours, ref = models(config, device=device, backend=backend)
    ours.eval()
    ref.eval()
    x = batch(config, 1, 20)
    x["attention_mask"][:] = 1.0
    xt = to_torch(x, device)
    b = minidt.get_backend(backend)
    x_ours = {k: (None if v is None else b.asarray(v)) for k, v in x.items()}

    def torch_step():
        with torch.no_grad():
            return ref(**xt, return_dict=False)[1][0, -1]

    return ours, x_ours, torch_step


def item_infer(args) -> dict:
    ours, x, fb = infer_pair(DecisionTransformerConfig(**PAPER))
    r = interleaved(lambda: ours.get_action(**x), fb, args.rounds, min_round=0.3)  # one rollout step's action
    r["full_forward"] = interleaved(minidt.no_grad()(lambda: ours(**x).action_preds), fb, args.rounds, min_round=0.3)
    return r


# --- item 3: evaluation of 100 Pendulum episodes --------------------------------------------------------------------
PENDULUM = dict(PAPER, state_dim=3, act_dim=1)
TARGET, SCALE, EVAL_K = -150.0, 100.0, 20


def pendulum_pre():
    from minidt.evaluate import Preprocess

    return Preprocess(state_mean=np.zeros(3), state_std=np.ones(3), scale=SCALE, action_low=np.array([-2.0]),
                      action_high=np.array([2.0]))


def torch_get_action(model, states, actions, rewards, returns_to_go, timesteps, K: int):
    """transformers' Decision Transformer example (`get_action`): the last K steps, left-padded to K."""
    import torch

    states = states.reshape(1, -1, model.config.state_dim)[:, -K:]
    actions = actions.reshape(1, -1, model.config.act_dim)[:, -K:]
    returns_to_go = returns_to_go.reshape(1, -1, 1)[:, -K:]
    timesteps = timesteps.reshape(1, -1)[:, -K:]
    padding = K - states.shape[1]
    attention_mask = torch.cat([torch.zeros(padding), torch.ones(states.shape[1])]).to(dtype=torch.long).reshape(1, -1)
    states = torch.cat([torch.zeros((1, padding, model.config.state_dim)), states], dim=1).float()
    actions = torch.cat([torch.zeros((1, padding, model.config.act_dim)), actions], dim=1).float()
    returns_to_go = torch.cat([torch.zeros((1, padding, 1)), returns_to_go], dim=1).float()
    timesteps = torch.cat([torch.zeros((1, padding), dtype=torch.long), timesteps], dim=1)
    _, action_preds, _ = model(states=states, actions=actions, rewards=rewards, returns_to_go=returns_to_go,
                               timesteps=timesteps, attention_mask=attention_mask, return_dict=False)
    return action_preds[0, -1]


def torch_evaluate(model, episodes: int, pre, K: int, seed: int = 0) -> list[float]:
    """The example's evaluation loop, one environment and one episode at a time."""
    import gymnasium as gym
    import torch

    sd, ad = model.config.state_dim, model.config.act_dim
    mean, std = torch.from_numpy(pre.state_mean).float(), torch.from_numpy(pre.state_std).float()
    env = gym.make("Pendulum-v1")
    returns = []
    with torch.no_grad():
        for j in range(episodes):
            state, _ = env.reset(seed=seed + j)
            states = torch.from_numpy(state).reshape(1, sd).float()
            actions = torch.zeros((0, ad))
            rewards = torch.zeros(0)
            target_return = torch.tensor(TARGET / pre.scale).reshape(1, 1)
            timesteps = torch.tensor(0).reshape(1, 1)
            episode_return = 0.0
            for t in range(env.spec.max_episode_steps):
                actions = torch.cat([actions, torch.zeros((1, ad))], dim=0)
                rewards = torch.cat([rewards, torch.zeros(1)])
                action = torch_get_action(model, (states - mean) / std, actions, rewards, target_return, timesteps, K)
                actions[-1] = action
                action = action.detach().cpu().numpy()
                state, reward, terminated, truncated, _ = env.step(pre.env_actions(action).astype(np.float32))
                states = torch.cat([states, torch.from_numpy(state).reshape(1, sd).float()], dim=0)
                rewards[-1] = reward
                pred_return = target_return[0, -1] - (reward / pre.scale)
                target_return = torch.cat([target_return, pred_return.reshape(1, 1)], dim=1)
                timesteps = torch.cat([timesteps, torch.ones((1, 1), dtype=torch.long) * (t + 1)], dim=1)
                episode_return += float(reward)
                if terminated or truncated:
                    break
            returns.append(episode_return)
    env.close()
    return returns


def item_eval(args) -> dict:
    from minidt.evaluate import rollout

    config = DecisionTransformerConfig(**PENDULUM)
    ours, ref = models(config)
    ours.eval()
    ref.eval()
    pre = pendulum_pre()
    episodes, torch_episodes = 100, args.torch_episodes
    dp = DataParallel(ours)  # as minidt evaluate runs it
    fa = lambda: rollout(dp, "Pendulum-v1", [TARGET], episodes, pre, EVAL_K, seed=0)  # noqa: E731
    fb = lambda: torch_evaluate(ref, torch_episodes, pre, EVAL_K, seed=0)  # noqa: E731
    # warm-up on 2 episodes each, which doubles as a check: same weights, seeds and target, so the two loops must
    # earn nearly the same returns (float32 round-off may split a trajectory late)
    check = {"minidt": rollout(dp, "Pendulum-v1", [TARGET], 2, pre, EVAL_K, seed=0)[0]["returns"],
             "torch": torch_evaluate(ref, 2, pre, EVAL_K, seed=0)}
    r = interleaved(fa, fb, args.eval_rounds, warmup=0, min_round=0.0)
    r["returns_check"] = check
    r["torch_episodes_measured"] = torch_episodes
    r["torch_s_measured"] = r["torch_s"]
    r["torch_s"] = r["torch_s"] * episodes / torch_episodes  # scaled linearly: each episode is independent
    r["ratio"] = r["minidt_s"] / r["torch_s"]
    r["episodes"] = episodes
    r["rounds"] = args.eval_rounds
    print(f"  eval returns, first 2 episodes: minidt {check['minidt']}, torch {check['torch']}", flush=True)
    return r


# --- item 4: peak memory of a training step --------------------------------------------------------------------
def item_memory(args) -> dict:
    from torch.profiler import ProfilerActivity, profile

    config = DecisionTransformerConfig(**PAPER)
    fa, fb = train_pair(config, 64, 20)
    fa(), fb()  # optimizer moments exist before we measure: only the step's own memory counts
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    fa()
    ours = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fb()
    # torch's memory timeline (what prof.export_memory_timeline plots): every allocator CREATE and DESTROY of the
    # step in time order; tensors alive before the step (PREEXISTING) do not count, as with tracemalloc above
    from torch.profiler._memory_profiler import Action, MemoryProfile

    live, peak = 0, 0
    for _, action, _, nbytes in MemoryProfile(prof.profiler.kineto_results).timeline:
        if action == Action.CREATE:
            live += nbytes
        elif action == Action.DESTROY:
            live -= nbytes
        peak = max(peak, live)
    return {"minidt_bytes": ours, "torch_bytes": peak, "ratio": ours / peak,
            "minidt_method": "tracemalloc peak above the start of the step",
            "torch_method": "torch.profiler memory timeline (profile_memory=True): peak of allocations minus frees "
                            "during the step"}


# --- item 5: scaling ---------------------------------------------------------------------------------------------
def item_scaling(args) -> dict:
    config = DecisionTransformerConfig(**PAPER)
    rows = []
    grid = [(B, 20) for B in args.batches] + [(64, K) for K in args.contexts if K != 20]
    for B, K in grid:
        fa, fb = train_pair(config, B, K)
        r = interleaved(fa, fb, args.rounds, warmup=1)
        rows.append({"B": B, "K": K, "minidt_s": r["minidt_s"], "torch_s": r["torch_s"], "ratio": r["ratio"]})
        print(f"  scaling B={B:4d} K={K:3d}  minidt {r['minidt_s'] * 1e3:8.1f} ms  torch {r['torch_s'] * 1e3:8.1f} ms"
              f"  ratio {r['ratio']:.2f}", flush=True)
    return {"rows": rows}


# --- item 6: GPU -------------------------------------------------------------------------------------------------
LARGE = dict(PAPER, hidden_size=512, n_layer=6, n_head=8)  # item 6's second training step: B 256, K 20
GPU_GOALS = {"train": 1.0, "train_large": 1.2, "infer": 1.0}


def item_gpu(args) -> dict:
    """Items 1 and 2 on the cupy backend against torch CUDA (float32, eager, TF32 off on both sides), each step
    synchronized, in one process: the paper config's training step at B 64, a larger one (hidden 512, 6 layers, 8
    heads, K 20, B 256), and the batch-1 rollout step."""
    import torch

    try:
        minidt.get_backend("cupy")
    except RuntimeError as e:
        return {"skipped": f"no CuPy GPU backend ({e})"}
    if not torch.cuda.is_available():
        return {"skipped": "torch has no CUDA device"}
    import cupy

    def synced(f, sync):
        def g():
            f()
            sync()
        return g

    sync_a, sync_b = cupy.cuda.get_current_stream().synchronize, torch.cuda.synchronize
    out = {"device": cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode(),
           "cupy": cupy.__version__, "torch": torch.__version__}
    for name, config, B in (("train", PAPER, 64), ("train_large", LARGE, 256)):
        fa, fb = train_pair(DecisionTransformerConfig(**config), B, 20, device="cuda", backend="cupy")
        out[name] = interleaved(synced(fa, sync_a), synced(fb, sync_b), args.rounds)
    ours, xo, fb1 = infer_pair(DecisionTransformerConfig(**PAPER), device="cuda", backend="cupy")
    out["infer"] = interleaved(synced(lambda: ours.get_action(**xo), sync_a), synced(fb1, sync_b),
                               args.rounds)  # one rollout step, as item 2
    return out


# --- the table ---------------------------------------------------------------------------------------------------
GOALS = {"train": 0.95, "infer": 0.40, "eval": 0.12, "memory": 1.0}  # issue 16


def fmt_s(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def table(results: dict) -> str:
    lines = [f"{'item':<44} {'minidt':>12} {'torch':>12} {'ratio':>7} {'goal':>6}  ok", "-" * 90]

    def row(name, a, b, ratio, goal):
        ok = "" if goal is None else ("yes" if ratio <= goal else "NO")
        lines.append(f"{name:<44} {a:>12} {b:>12} {ratio:>7.3f} {'' if goal is None else f'<={goal}':>6}  {ok}")

    if "train" in results:
        r = results["train"]
        row("1 train step (B 64, K 20, fwd+loss+bwd+clip+AdamW)", fmt_s(r["minidt_s"]), fmt_s(r["torch_s"]),
            r["ratio"], GOALS["train"])
        o = r["one_replica"]
        row("  one replica (--workers 1)", fmt_s(o["minidt_s"]), fmt_s(o["torch_s"]), o["ratio"], None)
        row(f"  GFLOP/s ({r['gflop']:.1f} GFLOP per step)", f"{r['minidt_gflops']:.0f}", f"{r['torch_gflops']:.0f}",
            r["minidt_gflops"] / r["torch_gflops"], None)
        row("  sgemm GFLOP/s at the step's GEMM shapes", f"{r['sgemm_numpy_gflops']:.0f}",
            f"{r['sgemm_torch_gflops']:.0f}", r["sgemm_numpy_gflops"] / r["sgemm_torch_gflops"], None)
    if "infer" in results:
        r = results["infer"]
        row("2 inference, batch 1, K 20 (get_action)", fmt_s(r["minidt_s"]), fmt_s(r["torch_s"]), r["ratio"],
            GOALS["infer"])
        f = r["full_forward"]
        row("  the full forward (all three predictions)", fmt_s(f["minidt_s"]), fmt_s(f["torch_s"]), f["ratio"], None)
    if "eval" in results:
        r = results["eval"]
        row(f"3 eval 100 Pendulum episodes (torch: {r['torch_episodes_measured']} x"
            f"{r['episodes'] // r['torch_episodes_measured']})", fmt_s(r["minidt_s"]), fmt_s(r["torch_s"]),
            r["ratio"], GOALS["eval"])
    if "memory" in results:
        r = results["memory"]
        row("4 peak memory of a training step", f"{r['minidt_bytes'] / 2**20:.1f} MiB",
            f"{r['torch_bytes'] / 2**20:.1f} MiB", r["ratio"], GOALS["memory"])
    if "scaling" in results:
        for s in results["scaling"]["rows"]:
            row(f"5 train step B {s['B']}, K {s['K']}", fmt_s(s["minidt_s"]), fmt_s(s["torch_s"]), s["ratio"], None)
    if "gpu" in results:
        r = results["gpu"]
        if "skipped" in r:
            lines.append(f"6 GPU: SKIPPED: {r['skipped']}")
        else:
            for key, what in (("train", "6 GPU train step, paper config, B 64"),
                              ("train_large", "6 GPU train step, hidden 512 x 6, B 256"),
                              ("infer", "6 GPU inference batch 1 (get_action)")):
                row(what, fmt_s(r[key]["minidt_s"]), fmt_s(r[key]["torch_s"]), r[key]["ratio"], GPU_GOALS[key])
    return "\n".join(lines)


ITEMS = {"train": item_train, "infer": item_infer, "eval": item_eval, "memory": item_memory,
         "scaling": item_scaling, "gpu": item_gpu}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer torch episodes and scaling points")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--only", default=",".join(ITEMS), help=f"comma-separated subset of {','.join(ITEMS)}")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per measurement (>= 5)")
    args = p.parse_args(argv)
    if args.rounds < 5:
        raise SystemExit(f"--rounds: expected >= 5 (the median of fewer rounds is noise), got {args.rounds}")
    only = args.only.split(",")
    unknown = set(only) - set(ITEMS)
    if unknown:
        raise SystemExit(f"--only: expected items from {','.join(ITEMS)}, got {','.join(sorted(unknown))}")
    args.torch_episodes = 2 if args.quick else 10
    args.eval_rounds = 3 if args.quick else 5  # 100 vectorized episodes take a minute or more per round
    args.batches = [16, 64, 256] if args.quick else [16, 32, 64, 128, 256]
    args.contexts = [10, 60] if args.quick else [10, 20, 40, 60]

    import torch

    torch.set_num_threads(THREADS)
    info = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "dtype": "float32", "rounds": args.rounds, "quick": args.quick,
            "load_average_1min": os.getloadavg()[0]}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError as e:
        raise SystemExit(f"the benchmark needs transformers (pip install -e '.[test]'): {e}")
    print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    results: dict[str, Any] = {"info": info}
    for name in only:
        t0 = time.perf_counter()
        results[name] = ITEMS[name](args)
        print(f"[{name} done in {time.perf_counter() - t0:.0f} s]", flush=True)
    results["info"]["load_average_1min_end"] = os.getloadavg()[0]
    print(table(results))
    busy = max(info["load_average_1min"], os.getloadavg()[0]) > (os.cpu_count() or 1)
    print(f"load average (1 min) at start {info['load_average_1min']:.1f}, at end {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores: " + ("above the core count, other processes shared the machine: the ratios are "
                                        "not this machine's" if busy else "the machine was otherwise idle"))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, args.json)  # never a half-written file
    return results


if __name__ == "__main__":
    main()
