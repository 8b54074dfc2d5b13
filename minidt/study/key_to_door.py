"""key-to-door: credit assignment over a long gap (the paper's Table 6). DT, BC, %BC (BC on the successful
episodes) and the uniform random policy, on 1,000 and 10,000 random-policy episodes of minidt/KeyToDoor-v0;
success in percent at target return 1.

Settings, fixed before the first full run (2026-12-04, by the coordinator, to keep within the 30 minutes every
study keeps to on 2 cores):
- DT: `minidt train --env minidt/KeyToDoor-v0`'s settings (the quick preset, K 40: the whole episode), but 2,000
  steps instead of its 10,000 (settings.KEY_TO_DOOR_STEPS): 10,000 would make 6 DT runs alone 2 hours on 2 cores.
  Evaluated every 500 steps and at the end at targets 0, 0.25, ..., 1, 100 episodes each; its success: at target
  1. Issue 21's single-seed runs found DT's success on 1,000 episodes level (10-20 %) from 2,000 steps on;
- BC and %BC: 800 steps (evaluated every 200): they see only their own data, which for %BC is nothing but the
  successes (about 4 % of the episodes), where DT needs many passes over the rare successes among the failures;
  100 episodes each;
- the random policy: 100 episodes per seed (the same environment seeds as every evaluation);
- 3 seeds: 18 training runs at 0.169 s a step on one core (K 40): about 33 minutes on 2 idle cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..settings import EVAL_SEED
from .common import SMOKE_EVAL_EPISODES, SMOKE_TRAIN, bars, cell, pyplot, save, seeds_caption, settings
from .plan import Run
from .table import DASH, Table, fmt, mean_spread

ENV = "minidt/KeyToDoor-v0"
TITLE = "DT, BC, %BC and the random policy on Key-to-Door, success in % (the paper's Table 6)"
# Chen et al. 2021, Table 6: success rate (%) with 1K and 10K random-policy episodes
PAPER = {"DT": (71.8, 94.6), "BC": (1.4, 1.6), "%BC": (69.9, 95.1), "random": (3.1, 3.1), "CQL": (13.1, 13.3)}


def config(smoke: bool) -> dict[str, Any]:
    c: dict[str, Any] = {"env": ENV, "dataset": "random", "sizes": [1000, 10000],
                         "dt": {"steps": 2000, "eval_every": 500}, "bc": {"steps": 800, "eval_every": 200},
                         "percent": 10, "random_episodes": 100, "fixed": "2026-12-04"}
    if smoke:
        c.update(sizes=[20, 40], random_episodes=SMOKE_EVAL_EPISODES)
        tiny = {**SMOKE_TRAIN, "eval_every": 2, "eval_episodes": SMOKE_EVAL_EPISODES,
                "final_eval_episodes": SMOKE_EVAL_EPISODES}
        c["dt"], c["bc"] = dict(tiny), dict(tiny)
    return c


def plan(c: dict, seeds: int) -> list[Run]:
    runs = []
    for size in c["sizes"]:
        episodes = None if size == 10_000 else size  # minidt train's default tier holds 10,000
        for policy, fields in (("DT", dict(c["dt"], algo="dt")), ("BC", dict(c["bc"], algo="bc")),
                               ("%BC", dict(c["bc"], algo="bc", top_percent=c["percent"]))):
            for seed in range(seeds):
                s = settings(fields, env=ENV, dataset=c["dataset"], dataset_episodes=episodes, seed=seed)
                slug = policy.lower().replace("%", "pct-")
                runs.append(Run(f"{slug}-n{size}-seed{seed}", s, {"policy": policy, "size": str(size)},
                                target=1.0 if policy == "DT" else None))
    return runs


def extra(c: dict, seeds: int) -> dict:
    """The uniform random policy's success, measured per seed on the evaluation's environment seeds, and the
    exact rate (minidt.keytodoor.random_success_rate)."""
    import gymnasium as gym

    from ..keytodoor import random_success_rate

    rates = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        env = gym.make(ENV)
        wins = 0
        for j in range(c["random_episodes"]):
            env.reset(seed=EVAL_SEED + j)
            done, reward = False, 0.0
            while not done:
                _, reward, terminated, truncated, _ = env.step(int(rng.integers(4)))
                done = terminated or truncated
            wins += reward >= 1.0
        env.close()
        rates.append(100.0 * wins / c["random_episodes"])
    return {"random": mean_spread(rates), "random_exact": 100.0 * random_success_rate()}


def size_label(size: int) -> str:
    return f"{size:,}\nepisodes"


def table(c: dict, runs: list[dict], extra: dict) -> Table:
    rows, cells = [], {}
    for key in ("DT", "BC", "%BC", "random", "CQL"):
        texts = []
        for i, size in enumerate(c["sizes"]):
            ours = (extra["random"] if key == "random" else None if key == "CQL"
                    else cell(runs, policy=key, size=str(size)))
            if ours is not None:
                cells.setdefault(key, {})[str(size)] = ours
            texts += [fmt(ours), fmt(PAPER[key][i]) if i < 2 else DASH]
        rows.append((key if key != "CQL" else "CQL (not run)", texts))
    columns = [h for size in c["sizes"] for h in (size_label(size), "paper")]
    caption = (f"Success in % at target return 1 (BC, %BC, random: no target), {seeds_caption(runs)}; each seed's "
               f"rate over {runs[0]['evaluations'][0]['episodes']} episodes. DT trains {c['dt']['steps']:,} steps, "
               f"BC and %BC {c['bc']['steps']:,}; %BC keeps exactly the successful episodes. The random policy "
               f"(one set of episodes for both columns): its exact rate is {extra['random_exact']:.2f} %. CQL: the "
               "paper's TD baseline; minidt has no discrete one. Paper: Chen et al. 2021, Table 6 (1K, 10K).")
    return Table(f"key-to-door: {TITLE}", "policy", columns, rows, caption, cells)


def curves(runs: list[dict], policy: str, size: str) -> list[list[list[float]]]:
    """Each seed's [step, success %, successful-episode rows seen] points, from its evaluations."""
    out = []
    for r in sorted((r for r in runs if r["tags"] == {"policy": policy, "size": size}), key=lambda r: r["seed"]):
        rows = r["batch_size"] * (r["success_share"] or 0.0)
        out.append([[step, value, step * rows] for step, value in r["curve"]])
    return out


def figure(study: dict, path: Any) -> None:
    c, runs, extra = study["config"], study["runs"], study["extra"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    policies = ["DT", "BC", "%BC"]
    groups = [f"{size:,}" for size in c["sizes"]]
    bars(axes[0], groups, policies, lambda g, p: cell(runs, policy=p, size=g.replace(",", "")))
    for i, g in enumerate(groups):
        axes[0].plot([i - 0.4, i + 0.4], [extra["random"]["mean"]] * 2, "k--", lw=1,
                     label="random" if i == 0 else None)
        for j, p in enumerate(policies):
            if i < 2:
                axes[0].plot(i + (j - 1) * 0.8 / 3, PAPER[p][i], "rx", ms=7, label="paper" if i == j == 0 else None)
    axes[0].set(xlabel="random-policy episodes in the data", ylabel="success (%)", title="final success")
    axes[0].legend(fontsize=7)
    for j, p in enumerate(policies):
        for k, size in enumerate(c["sizes"]):
            for n, seed_curve in enumerate(curves(runs, p, str(size))):
                pts = np.array(seed_curve)
                style = dict(color=f"C{j}", ls="-" if k else "--", marker=".", alpha=0.7,
                             label=f"{p}, {size:,}" if n == 0 else None)
                axes[1].plot(pts[:, 0], pts[:, 1], **style)
                axes[2].plot(np.maximum(pts[:, 2], 1), pts[:, 1], **style)
    axes[1].set(xlabel="training step", ylabel="success (%)", title="success during training")
    axes[2].set(xlabel="rows from successful episodes seen (expected)", xscale="log",
                title="success against successes seen")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"key-to-door: {len({r['seed'] for r in runs})} seeds (dots, lines); dashed lines: "
                 f"{c['sizes'][0]:,} episodes, solid: {c['sizes'][1]:,}", fontsize=10)
    save(fig, path)
