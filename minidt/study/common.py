"""What the studies share: a run's settings from a study's config, the tiny smoke size, grouping the runs'
scores into table cells, and the figures' pieces."""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from ..settings import TrainSettings
from .table import mean_spread

# --smoke: a model and a run that take a fraction of a second (the studies' code paths, not their results)
SMOKE_TRAIN: dict[str, Any] = dict(steps=4, hidden_size=8, n_layer=1, batch_size=4, warmup_steps=1, log_every=1,
                                   checkpoint_every=2)
SMOKE_EPISODES = 6  # episodes in a smoke study's generated datasets
SMOKE_EVAL_EPISODES = 2


def settings(overrides: dict[str, Any], **fields: Any) -> TrainSettings:
    """A study run's settings: minidt train's (the quick preset, TD3+BC's defaults under algo td3bc, then the
    environment's own), then the study's `overrides`, then `fields`; one process, one thread (workers 1)."""
    return TrainSettings.from_preset("quick", **{**overrides, **fields, "workers": 1})


def short(env: str) -> str:
    """"Pendulum" for "Pendulum-v1", "KeyToDoor" for "minidt/KeyToDoor-v0": a column header's name."""
    return env.rsplit("/", 1)[-1].rsplit("-v", 1)[0]


def cell(runs: list[dict], **tags: str) -> dict:
    """mean_spread of the scores of the runs whose tags include `tags` (seeds in order)."""
    chosen = sorted((r for r in runs if all(r["tags"].get(k) == v for k, v in tags.items())),
                    key=lambda r: r["seed"])
    return mean_spread([r["score"] for r in chosen])


def seeds_caption(runs: list[dict]) -> str:
    n = sorted({r["seed"] for r in runs})
    return (f"mean ± spread over {len(n)} seed{'s' if len(n) > 1 else ''} ({', '.join(map(str, n))}); spread: "
            "the sample standard deviation over seeds (n - 1)")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: "str | os.PathLike") -> None:
    from ..files import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    pyplot().close(fig)


def bars(ax: Any, groups: list[str], series: list[str], get: Callable[[str, str], dict],
         colors: "list[str] | None" = None) -> None:
    """Grouped bars: one group per `groups` entry, one bar per `series` entry (get(group, series) ->
    mean_spread); the bar is the mean, the whisker the spread, the dots the seeds."""
    width = 0.8 / len(series)
    for j, name in enumerate(series):
        x = np.arange(len(groups)) + (j - (len(series) - 1) / 2) * width
        cells = [get(g, name) for g in groups]
        means = [np.nan if c["mean"] is None else c["mean"] for c in cells]
        errs = [0.0 if c["spread"] is None else c["spread"] for c in cells]
        color = colors[j] if colors else f"C{j}"
        ax.bar(x, means, width * 0.9, yerr=errs, capsize=3, color=color, alpha=0.75, label=name)
        for xi, c in zip(x, cells):
            ax.plot([xi] * c["n"], c["values"], "k.", ms=3)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.grid(axis="y", alpha=0.3)
