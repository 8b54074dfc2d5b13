"""What a run is made of: the presets and TrainSettings, every number `minidt train` takes, checked when made.

run.json keeps a run's settings (`minidt.runs.read_run_info` reads them back through TrainSettings, so a resumed or
evaluated run is checked as a new one is); the command line's flags override a preset's values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .backend import BACKENDS, DTYPES

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's gym settings (Chen et al. 2021, Table 8 and the released code).
    "paper": dict(K=20, batch_size=64, lr=1e-4, weight_decay=1e-4, warmup_steps=10_000, grad_clip=0.25,
                  dropout=0.1, hidden_size=128, n_layer=3, n_head=1, activation_function="relu", steps=100_000,
                  eval_every=10_000, eval_episodes=10),
    # Minutes on a laptop CPU: a smaller model, a higher learning rate, a short warm-up. These are TrainSettings'
    # defaults, so the preset overrides nothing.
    "quick": {},
}

# What each algorithm trains: "dt" the Decision Transformer, "td3bc" TD3+BC (minidt.td3bc), the TD-learning baseline.
ALGOS = ("dt", "td3bc")
# TD3+BC's own defaults: the paper's network width, learning rate and batch (Fujimoto & Gu 2021), and a CPU step
# budget where the paper trains 1M steps: a run of 20,000 steps took 684-1,065 s (wall, with its evaluation) on
# the shared 2-core machine (load average 6-11), where the quick preset's DT run took 1,442-3,007 s (--workers 1).
# Its other hyperparameters are minidt.td3bc.TD3BCConfig's defaults, the paper's.
TD3BC_DEFAULTS: dict[str, Any] = dict(steps=20_000, batch_size=256, lr=3e-4, hidden_size=256)

EVAL_SEED = 10_000  # evaluation episodes are seeded apart from the dataset's (which start at 0)


@dataclass
class TrainSettings:
    """Everything a run needs. The defaults are the "quick" preset."""

    env: str = "Pendulum-v1"
    dataset: str = "full-replay"
    preset: str = "quick"
    steps: int = 2_500
    K: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 0.25
    dropout: float = 0.1
    hidden_size: int = 64
    n_layer: int = 2
    n_head: int = 1
    activation_function: str = "relu"
    eval_every: int = 0  # steps between evaluations during training; 0: only at the end
    eval_episodes: int = 5  # per target during training
    final_eval_episodes: int = 20  # per target at the end; 0: no final evaluation
    log_every: int = 50
    checkpoint_every: int = 500
    seed: int = 0
    dtype: str = "float32"
    backend: str = "numpy"
    workers: int | None = None  # DataParallel replicas (threads); None: the usable cores (numpy), 1: off
    algo: str = "dt"  # one of ALGOS
    delayed_rewards: bool = False  # every episode's rewards moved to its last step (minidt.data.delay_rewards)

    def __post_init__(self) -> None:
        at_least = {"steps": 1, "K": 1, "batch_size": 1, "hidden_size": 1, "n_layer": 1, "n_head": 1, "log_every": 1,
                    "checkpoint_every": 1, "warmup_steps": 0, "eval_every": 0, "eval_episodes": 1,
                    "final_eval_episodes": 0, "seed": 0}
        for name, low in at_least.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {v!r}")
        for name in ("lr", "weight_decay", "grad_clip", "dropout"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < math.inf:
                raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
        if not self.lr > 0 or not self.dropout < 1:
            raise ValueError(f"lr and dropout: expected lr > 0 and dropout < 1, got {self.lr} and {self.dropout}")
        if self.workers is not None and (not isinstance(self.workers, int) or isinstance(self.workers, bool)
                                         or self.workers < 1):
            raise ValueError(f"workers: expected None or an integer >= 1, got {self.workers!r}")
        for name, allowed in (("preset", tuple(PRESETS)), ("dtype", DTYPES), ("backend", BACKENDS),
                              ("algo", ALGOS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not isinstance(self.delayed_rewards, bool):
            raise ValueError(f"delayed_rewards: expected True or False, got {self.delayed_rewards!r}")
        if self.algo == "td3bc" and (self.preset != "quick" or self.workers not in (None, 1)):
            raise ValueError(f"algo td3bc: the presets and DataParallel workers are the Decision Transformer's; "
                             f"TD3+BC takes the paper's hyperparameters on one thread, got preset {self.preset!r} "
                             f"and workers {self.workers!r}")

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "TrainSettings":
        """The preset's values, under algo td3bc TD3BC_DEFAULTS instead, then the overrides that are not None."""
        if preset not in PRESETS:
            raise ValueError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
        defaults = TD3BC_DEFAULTS if overrides.get("algo") == "td3bc" else PRESETS[preset]
        values = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(preset=preset, **values)
