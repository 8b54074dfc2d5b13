"""context-length: does the context matter? DT with K = 1 (the current return-to-go and state only), 5, 20 and 50
steps. The paper's Table 5 (Atari): K = 30 beats K = 1 on every game it tried (Breakout 267.5 against 73.9).

Fixed on 2026-12-04, before the first full run, from the step times in plan.py (measured that day):
- Pendulum-v1 and CartPole-v1 (the discrete one), tier medium-replay (generated, 200 episodes, seed 0);
- K = 1, 5, 20, 50, the quick preset's model otherwise, 1,500 steps each (0.006, 0.016, 0.063 and 0.19 s a step
  on one core: the K = 50 runs dominate), 3 seeds: 24 runs, about 23 minutes on 2 cores;
- DT scored at the mean return of its data's best 10 % of episodes, over 50 episodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import SMOKE_EPISODES, SMOKE_EVAL_EPISODES, SMOKE_TRAIN, cell, pyplot, save, seeds_caption, settings, \
    short
from .plan import Run
from .table import DASH, Table, fmt

TITLE = "DT with context K = 1, 5, 20, 50 (the paper's Table 5)"
# Chen et al. 2021, Table 5: Breakout, gamer-normalized score, DT with K = 30 and with no context (K = 1)
PAPER = {1: 73.9, 30: 267.5}


def config(smoke: bool) -> dict[str, Any]:
    c: dict[str, Any] = {"envs": ["Pendulum-v1", "CartPole-v1"], "dataset": "medium-replay",
                         "dataset_episodes": None, "Ks": [1, 5, 20, 50],
                         "train": {"steps": 1500, "final_eval_episodes": 0}, "target": "best-decile",
                         "eval_episodes": 50, "fixed": "2026-12-04"}
    if smoke:
        c.update(dataset_episodes=SMOKE_EPISODES, eval_episodes=SMOKE_EVAL_EPISODES)
        c["train"].update(SMOKE_TRAIN)
    return c


def plan(c: dict, seeds: int) -> list[Run]:
    runs = []
    for env in c["envs"]:
        for K in c["Ks"]:
            for seed in range(seeds):
                s = settings(c["train"], env=env, dataset=c["dataset"], dataset_episodes=c["dataset_episodes"], K=K,
                             seed=seed)
                runs.append(Run(f"{short(env).lower()}-K{K}-seed{seed}", s, {"env": env, "K": str(K)},
                                target=c["target"], episodes=c["eval_episodes"]))
    return runs


def extra(c: dict, seeds: int) -> dict:
    return {}


def table(c: dict, runs: list[dict], extra: dict) -> Table:
    rows, cells = [], {}
    for K in sorted({*c["Ks"], *PAPER}):
        ours = [cell(runs, env=env, K=str(K)) if K in c["Ks"] else None for env in c["envs"]]
        if K in c["Ks"]:
            cells[f"K={K}"] = dict(zip(c["envs"], ours))
        rows.append((f"K={K}", [fmt(x) for x in ours] + [fmt(PAPER[K]) if K in PAPER else DASH]))
    columns = [f"{short(env)}\n{c['dataset'].replace('medium-replay', 'med-replay')}" for env in c["envs"]]
    caption = (f"Normalized score, {seeds_caption(runs)}; each seed's score the mean over {c['eval_episodes']} "
               f"episodes at the target of the data's best 10 % of episodes; {c['train']['steps']} training steps "
               "per run. K=30: the paper's only (we ran 20 and 50). Paper: Chen et al. 2021, Table 5, Atari "
               "Breakout (gamer-normalized), DT with K = 30 against K = 1.")
    return Table(f"context-length: {TITLE}", "setting", columns + ["paper\nBreakout"], rows, caption, cells)


def figure(study: dict, path: Any) -> None:
    c, runs = study["config"], study["runs"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for j, env in enumerate(c["envs"]):
        cells = [cell(runs, env=env, K=str(K)) for K in c["Ks"]]
        x = np.array(c["Ks"]) * (1 + 0.04 * (j - 0.5))  # a little apart, so whiskers do not overlap
        ax.errorbar(x, [np.nan if g["mean"] is None else g["mean"] for g in cells],
                    yerr=[0.0 if g["spread"] is None else g["spread"] for g in cells], marker="o", capsize=3,
                    color=f"C{j}", label=short(env))
        for xi, g in zip(x, cells):
            ax.plot([xi] * g["n"], g["values"], ".", color=f"C{j}", alpha=0.5, ms=4)
    ax.set_xscale("log")
    ax.set_xticks(c["Ks"], [str(K) for K in c["Ks"]])
    ax.set_xlabel("context K (steps)")
    ax.set_ylabel("normalized score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"context-length: {c['dataset']}, {c['train']['steps']} steps, "
                 f"{len({r['seed'] for r in runs})} seeds (dots)", fontsize=10)
    save(fig, path)
