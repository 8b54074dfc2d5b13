"""delayed-reward: every episode's rewards moved to its last step (the return is unchanged). A return-conditioned
DT should not care; a TD method, whose values must now carry one reward back over the whole episode, may
collapse. The paper's Table 7 (Hopper medium-expert): DT 107.3 delayed against 107.6, CQL 9.0 against 111.0.

BC and %BC never see when a reward came: BC's return input is zeroed, and %BC picks episodes by their return,
which the delay keeps. Their runs would be the same with delayed rewards, step for step, so they run once and
stand in both columns (the paper prints them once too).

Fixed on 2026-12-04, before the first full run, from the step times in plan.py (measured that day):
- Pendulum-v1 medium-expert (400 episodes: 200 medium, 200 expert), the continuous environment TD3+BC needs;
- DT, BC and 10%BC: the quick preset's model for 2,000 steps (0.063 s a step on one core); TD3+BC: its
  defaults, the paper's network and 20,000 steps (0.008 s a step); 3 seeds each: 18 runs, about 22 minutes on 2
  cores (2,500 DT steps would make it 26: too close to the 30-minute limit);
- DT scored at the mean return of the data's best 10 % of episodes; every run evaluated over 50 episodes.
"""

from __future__ import annotations

from typing import Any

from .common import SMOKE_EPISODES, SMOKE_EVAL_EPISODES, SMOKE_TRAIN, bars, cell, pyplot, save, seeds_caption, \
    settings
from .plan import Run
from .table import Table, fmt

TITLE = "DT, BC, %BC and TD3+BC on original and delayed rewards (the paper's Table 7)"
# row -> (the paper's name for it, original, delayed): Chen et al. 2021, Table 7, Hopper medium-expert
PAPER = {"DT": ("DT", 107.6, 107.3), "TD3+BC": ("CQL", 111.0, 9.0), "BC": ("BC", 59.9, 59.9),
         "10%BC": ("%BC", 102.6, 102.6)}


def config(smoke: bool) -> dict[str, Any]:
    c: dict[str, Any] = {"env": "Pendulum-v1", "dataset": "medium-expert", "dataset_episodes": None,
                         "percent": 10, "train": {"steps": 2000, "K": 20, "final_eval_episodes": 0},
                         "td3bc": {"final_eval_episodes": 0}, "target": "best-decile", "eval_episodes": 50,
                         "fixed": "2026-12-04"}
    if smoke:
        c.update(dataset_episodes=SMOKE_EPISODES // 2, eval_episodes=SMOKE_EVAL_EPISODES)
        c["train"].update(SMOKE_TRAIN)
        c["td3bc"].update(steps=SMOKE_TRAIN["steps"], batch_size=8, hidden_size=8, log_every=1, checkpoint_every=2)
    return c


def plan(c: dict, seeds: int) -> list[Run]:
    data = dict(env=c["env"], dataset=c["dataset"], dataset_episodes=c["dataset_episodes"])
    kinds = [("DT", "original", dict(algo="dt")), ("DT", "delayed", dict(algo="dt", delayed_rewards=True)),
             ("TD3+BC", "original", dict(algo="td3bc")),
             ("TD3+BC", "delayed", dict(algo="td3bc", delayed_rewards=True)),
             ("BC", "both", dict(algo="bc")), (f"{c['percent']}%BC", "both", dict(algo="bc",
                                                                                top_percent=c["percent"]))]
    runs = []
    for policy, rewards, fields in kinds:
        for seed in range(seeds):
            base = c["td3bc"] if policy == "TD3+BC" else c["train"]
            s = settings(base, **data, **fields, seed=seed)
            slug = policy.lower().replace("%", "pct-").replace("+", "")
            runs.append(Run(f"{slug}-{rewards}-seed{seed}", s, {"policy": policy, "rewards": rewards},
                            target=c["target"] if policy == "DT" else None, episodes=c["eval_episodes"]))
    return runs


def extra(c: dict, seeds: int) -> dict:
    return {}


def rows_of(c: dict) -> list[str]:
    return ["DT", "TD3+BC", "BC", f"{c['percent']}%BC"]


def cell_of(runs: list[dict], policy: str, rewards: str) -> dict:
    got = cell(runs, policy=policy, rewards=rewards)
    return got if got["n"] else cell(runs, policy=policy, rewards="both")


def table(c: dict, runs: list[dict], extra: dict) -> Table:
    rows, cells = [], {}
    for policy in rows_of(c):
        paper = PAPER.get(policy, PAPER["10%BC"])
        original, delayed = cell_of(runs, policy, "original"), cell_of(runs, policy, "delayed")
        cells[policy] = {"original": original, "delayed": delayed}
        name = f"{policy} (paper: {paper[0]})" if paper[0] not in (policy, "%BC") else policy
        rows.append((name, [fmt(original), fmt(paper[1]), fmt(delayed), fmt(paper[2])]))
    td3bc_steps = runs[[r["tags"]["policy"] for r in runs].index("TD3+BC")]["steps"]
    caption = (f"Normalized score on {c['env']} {c['dataset']}, {seeds_caption(runs)}; each seed's score the mean "
               f"over {c['eval_episodes']} episodes. DT, BC and {c['percent']}%BC train {c['train']['steps']} steps, "
               f"TD3+BC {td3bc_steps}; DT at the target of the data's best 10 % of episodes. BC and %BC never see "
               "when a reward came: the same runs fill both columns (so does the paper). Paper: Chen et al. 2021, "
               "Table 7, Hopper medium-expert (its TD method: CQL).")
    return Table(f"delayed-reward: {TITLE}", "policy", ["original", "paper\noriginal", "delayed", "paper\ndelayed"],
                 rows, caption, cells)


def figure(study: dict, path: Any) -> None:
    c, runs = study["config"], study["runs"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    bars(ax, rows_of(c), ["original", "delayed"], lambda p, rewards: cell_of(runs, p, rewards),
         colors=["tab:blue", "tab:orange"])
    ax.set_ylabel("normalized score")
    ax.legend(fontsize=8)
    ax.set_title(f"delayed-reward: {c['env']} {c['dataset']}, {len({r['seed'] for r in runs})} seeds (dots); "
                 "BC, %BC: one set of runs", fontsize=10)
    save(fig, path)
