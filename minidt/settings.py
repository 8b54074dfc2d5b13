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

# Key-to-Door's training budget under the quick preset, fixed before the first full run from the feasibility
# prototype's calibration (at 1,000 episodes, 16 % success after 1,500 steps and 36 % after 4,500; at 10,000,
# 5.5 % after 3,000) and the step time measured with K = 40: about 0.17 s of one core (wall 0.39-0.43 s under a
# load average of 6-7 on 2 cores). 10,000 steps, about half an hour of one core.
KEY_TO_DOOR_STEPS = 10_000

# TD3+BC's own defaults: the paper's network width, learning rate and batch (Fujimoto & Gu 2021), and a CPU step
# budget where the paper trains 1M steps: a run of 20,000 steps took 684-1,065 s (wall, with its evaluation) on
# the shared 2-core machine (load average 6-11), where the quick preset's DT run took 1,442-3,007 s (--workers 1).
# Its other hyperparameters are minidt.td3bc.TD3BCConfig's defaults, the paper's.
TD3BC_DEFAULTS: dict[str, Any] = dict(steps=20_000, batch_size=256, lr=3e-4, hidden_size=256)

EVAL_SEED = 10_000  # evaluation episodes are seeded apart from the dataset's (which start at 0)

# What is trained: "dt", the Decision Transformer; "bc", behaviour cloning, the same model with its return input
# zeroed (in training and in evaluation), so DT against BC changes exactly one thing. With top_percent < 100, BC is
# the paper's %BC: BC on the best top_percent % of the episodes by return; "td3bc", TD3+BC (minidt.td3bc), the
# TD-learning baseline.
ALGOS = ("dt", "bc", "td3bc")

# An environment's own defaults, over TrainSettings' and the preset's (a flag given on the command line wins):
# what the task is, for every preset (Key-to-Door: its dataset of random-policy episodes, and a context of the
# whole episode, 40 steps, as in the paper)...
ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "keytodoor": dict(dataset="random", K=40),
}
# ...and, for the quick preset, how long to train and how to evaluate. Key-to-Door's successes are rare (4.4 % of
# random episodes), so DT needs many passes over them: a budget fixed from the measured step time and the
# feasibility prototype's calibration, never from the success it gets; evaluations on the way show how success
# grows with steps, 100 episodes per target (a success rate's standard error: 5 points at most).
QUICK_ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "keytodoor": dict(steps=KEY_TO_DOOR_STEPS, eval_every=KEY_TO_DOOR_STEPS // 4, eval_episodes=100,
                      final_eval_episodes=100),
}


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
    top_percent: float = 100.0  # train on the best top_percent % of the episodes by return (%BC)
    dataset_episodes: int | None = None  # a generated tier's number of episodes; None: its default
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
        for name in ("workers", "dataset_episodes"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name}: expected None or an integer >= 1, got {v!r}")
        p = self.top_percent
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100:
            raise ValueError(f"top_percent: expected a percentage in (0, 100], got {p!r}")
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
        """The preset's settings (under algo td3bc, TD3BC_DEFAULTS instead), then the environment's own
        (ENV_DEFAULTS; QUICK_ENV_DEFAULTS with the quick preset), then the overrides that are not None."""
        if preset not in PRESETS:
            raise ValueError(f"preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
        given = {k: v for k, v in overrides.items() if v is not None}
        defaults = TD3BC_DEFAULTS if given.get("algo") == "td3bc" else PRESETS[preset]
        env = env_defaults(given.get("env", cls.env), preset)
        return cls(preset=preset, **{**defaults, **env, **given})

    @property
    def label(self) -> str:
        """"DT", "BC", "%BC" (BC on the best top_percent %) or "TD3+BC": how a table names the policy."""
        if self.algo == "td3bc":
            return "TD3+BC"
        return "DT" if self.algo == "dt" else "BC" if self.top_percent == 100 else "%BC"


def env_defaults(env: str, preset: str) -> dict[str, Any]:
    """An environment's own defaults under a preset (empty for one minidt does not know)."""
    from .data.envs import env_name  # not at import: minidt.data brings gymnasium

    name = env_name(env)
    return {**ENV_DEFAULTS.get(name, {}), **(QUICK_ENV_DEFAULTS.get(name, {}) if preset == "quick" else {})}
