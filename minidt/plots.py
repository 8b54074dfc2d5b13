"""The two pictures of a training run: the loss curve (TD3+BC's two losses), and achieved return against the
return asked for; and how a tutorial shows a figure (inline in a notebook, a PNG file either way)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: "str | os.PathLike") -> None:
    from .files import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))


def figure_dir(tutorial_file: "str | None") -> Path:
    """Where a tutorial writes its figures: $MINIDT_FIGURES if set, else figures/ beside the tutorial file. A
    notebook has no __file__ (pass None): Jupyter runs it in its own folder, so figures/ lands beside it too."""
    folder = Path(os.environ.get("MINIDT_FIGURES") or Path(tutorial_file or "notebook").resolve().parent / "figures")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def show(fig, path: "str | os.PathLike") -> None:
    """Save `fig` as a PNG at `path`; in a notebook (a Jupyter kernel), also show that PNG under the cell. Then
    close the figure (a script makes many: open figures would pile up)."""
    import matplotlib.pyplot as plt

    _save(fig, path)
    if "ipykernel" in sys.modules:
        from IPython.display import Image, display

        display(Image(filename=str(path)))
    plt.close(fig)


def plot_loss(steps: Sequence[int], losses: Sequence[float], path: "str | os.PathLike", title: str = "",
              baseline: float | None = None, discrete: bool = False) -> None:
    """Training loss (the mean over each logging window, from step 1) against step, log scale, with a moving
    average; baseline: the loss of the best constant action (the dataset's mean action; discrete: its action
    frequencies), a dashed line. discrete: the loss is the actions' cross-entropy, not their MSE."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps, losses = np.asarray(steps), np.asarray(losses)
    ax.plot(steps, losses, lw=0.8, alpha=0.4, marker="." if len(losses) < 30 else None, label="loss")
    w = max(1, len(losses) // 20)
    if len(losses) > w > 1:
        smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], smooth, lw=2, label=f"moving average ({w} points)")
    if baseline is not None:
        what = "the data's action frequencies" if discrete else "the data's mean"
        ax.axhline(baseline, color="tab:red", lw=1, ls="--", label=f"constant action ({what}): {baseline:.3g}")
    ax.set_yscale("log")
    # 1-2-5 ticks in plain numbers (0.02, 0.05, 0.1), not 10^-2 with unlabelled minor ticks
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))  # 20,000, not 2e4 or an offset
    ax.set_xlim(left=min(1, steps.min()) if len(steps) else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("action cross-entropy" if discrete else "action MSE")
    ax.set_title(title or "training loss")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    _save(fig, path)
    plt.close(fig)


def plot_td3bc_losses(steps: Sequence[int], critic: Sequence[float], actor: Sequence[float | None],
                      path: "str | os.PathLike", title: str = "") -> None:
    """A TD3+BC run's two losses against step (each the mean over a logging window): the critics' TD error
    (L_Q, log scale) and the actor's -lambda mean Q + BC (linear: it is negative once Q dominates). actor None:
    a window without an actor update."""
    from matplotlib.ticker import FuncFormatter

    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    steps = np.asarray(steps)
    top.plot(steps, critic, lw=1, color="tab:blue")
    top.set_yscale("log")
    top.set_ylabel("critic loss (TD error)")
    has = np.array([a is not None for a in actor], bool)
    bottom.plot(steps[has], np.array([a for a in actor if a is not None], float), lw=1, color="tab:orange")
    bottom.set_ylabel("actor loss (-lambda Q + BC)")
    bottom.set_xlabel("step")
    bottom.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
    top.set_title(title or "TD3+BC training losses")
    _save(fig, path)
    plt.close(fig)


def plot_return_conditioning(evaluations: list[dict], path: "str | os.PathLike", dataset_best: float,
                             title: str = "", dataset_worst: float | None = None, success: bool = False,
                             no_target: str = "BC") -> None:
    """Achieved return (mean +- std over episodes) against the target return; y = x is perfect conditioning.
    success: the return is 1 on success and 0 otherwise (Key-to-Door), so its mean is the success rate: that is
    what the y axis says, without the std band. An evaluation with no target (BC: target_return None) is a level
    line across the targets, or across the dataset's returns [dataset_worst, dataset_best] when it is alone, named
    `no_target` ("BC" or "%BC")."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    rows = [e for e in evaluations if e["target_return"] is not None]
    t = np.array([e["target_return"] for e in rows])
    m = np.array([e["return_mean"] for e in rows])
    s = np.zeros(len(rows)) if success else np.array([e["return_std"] for e in rows])
    span = (t.min(), t.max()) if len(rows) else (min(dataset_worst, 0.0) if success else dataset_worst, dataset_best)
    if len(rows):
        if not success:
            ax.fill_between(t, m - s, m + s, alpha=0.25, label="achieved: mean +- std")
        ax.plot(t, m, "o-", label="success rate" if success else "achieved: mean")
    for e in evaluations:
        if e["target_return"] is None:
            mean, std = e["return_mean"], 0.0 if success else e["return_std"]
            ax.axhline(mean, color="tab:green", lw=2, label=f"{no_target}, no target: {mean:.3g}"
                       + ("" if success else f" +- {std:.3g}"))
            if std:
                ax.axhspan(mean - std, mean + std, color="tab:green", alpha=0.15)
            m, s = np.append(m, mean), np.append(s, std)
    lo, hi = min(span[0], (m - s).min()), max(span[1], (m + s).max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.axhline(dataset_best, color="tab:red", lw=1, ls=":", label="best return in the dataset")
    ax.set_xlabel("target return")
    ax.set_ylabel("success rate" if success else "achieved return")
    ax.set_title(title or "return conditioning")
    ax.legend()
    _save(fig, path)
    plt.close(fig)
