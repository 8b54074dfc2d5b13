"""return-conditioning: what `minidt train` does by default, over several seeds: does the achieved return follow
the target return (the paper's Figure 4)?

Settings, fixed on 2026-12-04 before the first full run: exactly `minidt train`'s defaults (Pendulum-v1
full-replay, 200 episodes; the quick preset, 2,500 steps; its own evaluation at 7 targets, 20 episodes each),
one thread per run (DataParallel off), 3 seeds: 3 runs of 2,500 steps at 0.063 s a step on one core, about 6
minutes on 2 cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import SMOKE_EPISODES, SMOKE_EVAL_EPISODES, SMOKE_TRAIN, pyplot, save, seeds_caption, settings
from .plan import Run
from .table import Table, fmt, mean_spread

TITLE = "achieved against target return, minidt train's default run over seeds (the paper's Figure 4)"


def config(smoke: bool) -> dict[str, Any]:
    c: dict[str, Any] = {"env": "Pendulum-v1", "dataset": "full-replay", "dataset_episodes": None, "train": {},
                         "fixed": "2026-12-04"}
    if smoke:
        c.update(dataset_episodes=SMOKE_EPISODES)
        c["train"] = {**SMOKE_TRAIN, "final_eval_episodes": SMOKE_EVAL_EPISODES}
    return c


def plan(c: dict, seeds: int) -> list[Run]:
    return [Run(f"dt-seed{seed}", settings(c["train"], env=c["env"], dataset=c["dataset"],
                                           dataset_episodes=c["dataset_episodes"], seed=seed),
                {"policy": "DT"}, target="best-decile") for seed in range(seeds)]


def extra(c: dict, seeds: int) -> dict:
    return {}


def by_target(runs: list[dict]) -> list[tuple[float, dict, dict]]:
    """(target, achieved return, normalized score) per target, each a mean_spread over the seeds."""
    targets = [e["target_return"] for e in runs[0]["evaluations"]]
    out = []
    for i, t in enumerate(targets):
        rows = [r["evaluations"][i] for r in sorted(runs, key=lambda r: r["seed"])]
        out.append((t, mean_spread([e["return_mean"] for e in rows]),
                    mean_spread([e.get("normalized_score_mean", np.nan) for e in rows])))
    return out


def data_best(runs: list[dict]) -> float:
    """The best return in the data: the largest target inside the data (evaluation_targets spans min to max)."""
    return sorted(e["target_return"] for e in runs[0]["evaluations"])[-2]


def table(c: dict, runs: list[dict], extra: dict) -> Table:
    best, decile = data_best(runs), runs[0]["target"]
    rows, cells = [], {}
    for t, achieved, score in by_target(runs):
        note = " best 10%" if abs(t - decile) < 1e-6 else " beyond" if t > best + 1e-6 else ""
        cells[f"{t:.1f}"] = {"achieved": achieved, "normalized": score}
        rows.append((f"R0 {t:8.1f}{note}", [fmt(achieved), fmt(score),
                                            "≤ data's best" if t > best + 1e-6 else "≈ target"]))
    rho = mean_spread([r["rank_correlation"] for r in runs if r["rank_correlation"] is not None])
    cells["rank correlation"] = rho
    rows.append(("rank correlation", [fmt(rho, 2), "", "rising"]))
    caption = (f"Achieved return and normalized score at each target R0 (the same targets for every seed: from the "
               f"data's worst return to its best, {best:.1f}, its best 10 %'s mean, one beyond), {seeds_caption(runs)}; "
               f"each seed's value the mean over {runs[0]['evaluations'][0]['episodes']} episodes; {c['env']} "
               f"{c['dataset']}, {runs[0]['steps']:,} steps. Rank correlation: Spearman's, of achieved with target "
               "inside the data. Paper: Chen et al. 2021, Figure 4, a plot without numbers: achieved close to the "
               "target across the data, levelling off at the data's best.")
    return Table(f"return-conditioning: {TITLE}", "target", ["achieved\nreturn", "normalized\nscore",
                                                             "paper\n(Figure 4)"], rows, caption, cells)


def figure(study: dict, path: Any) -> None:
    runs = study["runs"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    points = by_target(runs)
    targets = np.array([t for t, _, _ in points])
    mean = np.array([a["mean"] for _, a, _ in points])
    spread = np.array([a["spread"] or 0.0 for _, a, _ in points])
    best = data_best(runs)
    for r in runs:
        ax.plot(targets, [e["return_mean"] for e in r["evaluations"]], color="tab:blue", lw=0.8, alpha=0.4)
    ax.fill_between(targets, mean - spread, mean + spread, color="tab:blue", alpha=0.2)
    ax.plot(targets, mean, "o-", color="tab:blue", label=f"achieved: mean over {len(runs)} seeds (thin: each)")
    ax.plot(targets, targets, "k--", lw=1, label="y = x")
    ax.axhline(best, color="tab:red", ls=":", label=f"best return in the data ({best:.0f})")
    ax.set(xlabel="target return R0", ylabel="achieved return",
           title=f"return-conditioning: {study['config']['env']} {study['config']['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)
