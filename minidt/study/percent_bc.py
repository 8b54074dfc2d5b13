"""percent-bc: is the Decision Transformer more than behaviour cloning on the best part of the data? DT against
%BC (BC on the best 10, 25, 40 % of the episodes by return) and BC (all of them), the paper's Table 3.

Fixed on 2026-12-04, before the first full run, from the step times in plan.py (measured that day):
- environments Pendulum-v1 and CartPole-v1 (the discrete one), tiers medium and medium-replay (generated, 200
  episodes each, seed 0): 4 datasets x 5 policies x 3 seeds = 60 runs;
- every run the quick preset's model and optimizer (K 20) for 600 steps: 60 runs at 0.063 s a step on one core
  take 38 s each, about 23 minutes on 2 cores with their evaluations, where the quick preset's 2,500 steps would
  take 90 (its loss curve, docs/loss.png: 0.245 at step 600 against 0.218 at 2,500, from 0.31);
- DT scored at one target, the mean return of its dataset's best 10 % of episodes; BC and %BC take none; each
  run evaluated over 50 episodes (seeds 10000 + j), its normalized score.
"""

from __future__ import annotations

from typing import Any

from .common import SMOKE_EPISODES, SMOKE_EVAL_EPISODES, SMOKE_TRAIN, bars, cell, pyplot, save, seeds_caption, \
    settings, short
from .plan import Run
from .table import DASH, Table, fmt

TITLE = "DT against %BC, behaviour cloning on the best X % of the episodes (the paper's Table 3)"
POLICIES = ("DT", "10%BC", "25%BC", "40%BC", "BC")
# Chen et al. 2021, Table 3 (D4RL normalized scores), beside our medium and medium-replay columns
PAPER = {"medium": ("Hopper-m", {"DT": 67.6, "10%BC": 65.9, "25%BC": 65.2, "40%BC": 65.3, "BC": 63.9}),
         "medium-replay": ("HC-m-r", {"DT": 36.6, "10%BC": 40.8, "BC": 4.3})}


def config(smoke: bool) -> dict[str, Any]:
    c: dict[str, Any] = {"envs": ["Pendulum-v1", "CartPole-v1"], "tiers": ["medium", "medium-replay"],
                         "policies": list(POLICIES), "dataset_episodes": None,
                         "train": {"steps": 600, "K": 20, "final_eval_episodes": 0},
                         "target": "best-decile", "eval_episodes": 50, "fixed": "2026-12-04"}
    if smoke:
        c.update(dataset_episodes=SMOKE_EPISODES, eval_episodes=SMOKE_EVAL_EPISODES)
        c["train"].update(SMOKE_TRAIN)
    return c


def plan(c: dict, seeds: int) -> list[Run]:
    runs = []
    for env in c["envs"]:
        for tier in c["tiers"]:
            for policy in c["policies"]:
                dt = policy == "DT"
                top = 100.0 if policy in ("DT", "BC") else float(policy.split("%")[0])
                for seed in range(seeds):
                    s = settings(c["train"], env=env, dataset=tier, dataset_episodes=c["dataset_episodes"],
                                 algo="dt" if dt else "bc", top_percent=top, seed=seed)
                    slug = policy.lower().replace("%", "pct-")
                    runs.append(Run(f"{short(env).lower()}-{tier}-{slug}-seed{seed}", s,
                                    {"env": env, "tier": tier, "policy": policy},
                                    target=c["target"] if dt else None, episodes=c["eval_episodes"]))
    return runs


def extra(c: dict, seeds: int) -> dict:
    return {}


def table(c: dict, runs: list[dict], extra: dict) -> Table:
    columns, keys = [], []
    for tier in c["tiers"]:
        for env in c["envs"]:
            columns.append(f"{short(env)}\n{tier.replace('medium-replay', 'med-replay')}")
            keys.append((env, tier))
        columns.append(f"paper\n{PAPER[tier][0]}")
        keys.append(("paper", tier))
    rows, cells = [], {}
    for policy in c["policies"]:
        texts = []
        for env, tier in keys:
            if env == "paper":
                value = PAPER[tier][1].get(policy)
                texts.append(DASH if value is None else fmt(value))
            else:
                cells.setdefault(policy, {})[f"{env} {tier}"] = got = cell(runs, env=env, tier=tier, policy=policy)
                texts.append(fmt(got))
        rows.append((policy, texts))
    steps = c["train"]["steps"]
    caption = (f"Normalized score (0 random, 100 expert), {seeds_caption(runs)}; each seed's score the mean over "
               f"{c['eval_episodes']} episodes; {steps} training steps per run; DT at the target of its data's best "
               "10 % of episodes. BC: all episodes (the paper's 100%BC). Paper: Chen et al. 2021, Table 3, "
               "Hopper-medium (Hopper-m) and HalfCheetah-medium-replay (HC-m-r), D4RL.")
    return Table(f"percent-bc: {TITLE}", "policy", columns, rows, caption, cells)


def figure(study: dict, path: Any) -> None:
    c, runs = study["config"], study["runs"]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(c["tiers"]), figsize=(10, 3.8), sharey=True, squeeze=False)
    for ax, tier in zip(axes[0], c["tiers"]):
        bars(ax, [short(e) for e in c["envs"]], c["policies"],
             lambda g, p: cell(runs, env=next(e for e in c["envs"] if short(e) == g), tier=tier, policy=p))
        ax.set_title(f"{tier} ({c['train']['steps']} steps)")
    axes[0][0].set_ylabel("normalized score")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"percent-bc: DT against %BC, {len({r['seed'] for r in runs})} seeds (dots); whiskers: spread")
    save(fig, path)
