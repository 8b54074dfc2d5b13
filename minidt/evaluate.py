"""Return-conditioned rollouts: ask for a return, act, subtract what was earned, ask again.

At every step t of every environment the model sees the last K steps of its own episode,
(R_i, s_i, a_i) for i = t-K+1 .. t, where R is the return still wanted (divided by `scale`), s the normalized
state and a the action taken (a zero placeholder at step t, which the state token cannot see anyway); it returns
action_preds[:, -1], read at the token s_t. After the step, R_{t+1} = R_t - r_t / scale; a model trained on
rewards delayed to the episode's last step (Preprocess.delayed_rewards) saw the whole return at every step, so its
R stays the target, as the reference's `mode == 'delayed'` keeps it.

All episodes of all targets run at once in one gymnasium vector env (autoreset NEXT_STEP), with one batched
`model.get_action` per step (the forward's lean path: only what action_preds[:, -1] needs); each episode counts
until its first termination or truncation. `EpisodeWindow` is that bookkeeping, shared with `minidt.load_policy`.
`rollout_sequential` is the same loop one environment at a time with the full forward, as the reference's example
does: the tests hold the two equal on the same seeds.

A discrete model's action is picked from its logits: by argmax (the default), or sampled from softmax(logits / T)
at a temperature T > 0, each episode with its own random stream seeded by its environment's seed (the same seed
gives the same episode). A behaviour-cloning model (Preprocess.zero_returns) sees a return input of 0 throughout:
the target plays no part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import math

import gymnasium as gym
import numpy as np

from . import keytodoor  # noqa: F401  (registers minidt/KeyToDoor-v0 with gymnasium)
from .backend import to_numpy
from .layers.module import no_grad
from .model import DecisionTransformerModel


@dataclass
class Preprocess:
    """How the training data was normalized; evaluation must do the same. Stored with every checkpoint."""

    state_mean: np.ndarray  # state_dim
    state_std: np.ndarray  # state_dim (std + 1e-6)
    scale: float  # returns-to-go are divided by it
    action_low: np.ndarray  # act_dim: the env's bounds; the model acts in [-1, 1] (unused for discrete actions)
    action_high: np.ndarray
    zero_returns: bool = False  # behaviour cloning: the return input is 0 in training and in evaluation
    delayed_rewards: bool = False  # trained on rewards delayed to the last step: the return-to-go stays the target

    def to_dict(self) -> dict:
        return {k: np.asarray(v).tolist() for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        flags = {k: d.get(k, False) for k in ("zero_returns", "delayed_rewards")}  # absent from older run.json files
        for k, v in flags.items():
            if not isinstance(v, bool):
                raise ValueError(f"{k}: expected true or false, got {v!r}")
        return cls(np.asarray(d["state_mean"], np.float64), np.asarray(d["state_std"], np.float64),
                   float(d["scale"]), np.asarray(d["action_low"], np.float64),
                   np.asarray(d["action_high"], np.float64), **flags)

    def next_return(self, R: Any, reward: Any) -> Any:
        """The return still wanted after earning `reward` with R still wanted (both float64, R divided by scale)."""
        return R if self.delayed_rewards else R - reward / self.scale

    def normalize_actions(self, a: np.ndarray) -> np.ndarray:
        """env action -> [-1, 1] (what tanh can reach)."""
        return 2.0 * (a - self.action_low) / (self.action_high - self.action_low) - 1.0

    def env_actions(self, a: np.ndarray) -> np.ndarray:
        """[-1, 1] -> env action."""
        return self.action_low + (np.clip(a, -1.0, 1.0) + 1.0) * 0.5 * (self.action_high - self.action_low)


def context(states: np.ndarray, actions: np.ndarray, rtg: np.ndarray, t: int, K: int) -> dict[str, np.ndarray]:
    """The model's input at step t from per-env histories states (N, L, sd), actions (N, L, ad), rtg (N, L):
    the last K steps up to and including t, left-padded with zeros and mask 0 while t + 1 < K."""
    N = states.shape[0]
    lo = max(0, t + 1 - K)
    n = t + 1 - lo  # real steps in the window
    pad = K - n

    def window(x: np.ndarray) -> np.ndarray:
        w = x[:, lo : t + 1]
        return np.concatenate([np.zeros((N, pad) + x.shape[2:], x.dtype), w], axis=1) if pad else w

    steps = np.arange(lo, t + 1)
    return {
        "states": window(states),
        "actions": window(actions),
        "rewards": None,
        "returns_to_go": window(rtg)[..., None],
        "timesteps": np.tile(np.concatenate([np.zeros(pad, np.int64), steps]), (N, 1)),
        "attention_mask": np.tile(np.concatenate([np.zeros(pad), np.ones(n)]), (N, 1)),
    }


def check_temperature(temperature: float, discrete: bool, name: str = "temperature") -> None:
    """A temperature is a finite number >= 0, and > 0 only for a discrete model (a continuous one has no
    distribution to sample from)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
        raise ValueError(f"{name}: expected a finite number >= 0 (0: argmax), got {temperature!r}")
    if temperature and not discrete:
        raise ValueError(f"{name}: the model predicts continuous actions, which it takes as they are; a "
                         f"temperature samples a discrete model's actions, got {temperature}")


def choose(logits: np.ndarray, temperature: float, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """A discrete action per row of logits (N, A): argmax at temperature 0, else sampled from
    softmax(logits / temperature), row i with one uniform draw of rngs[i]. -> ids (N,) int64."""
    if temperature == 0:
        return np.argmax(logits, axis=1)
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))  # N,A
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)  # N,A
    u = np.array([rng.random() for rng in rngs])  # N
    return np.minimum((u[:, None] >= cdf).sum(axis=1), logits.shape[1] - 1)  # the cdf may end a hair below 1


class EpisodeWindow:
    """What a return-conditioned agent keeps of N episodes it is playing: normalized states (N, L, state_dim), the
    actions it took (N, L, act_dim, in [-1, 1]; one-hot rows for discrete actions) and the returns-to-go still
    wanted (N, L), L the longest episode. `rollout` keeps one for all its environments, `minidt.policy.Policy` one
    for a single episode: the same arrays and the same arithmetic, so the two act alike to the bit.

        a = window.act(model, t, obs)    # s_t in, a_t (env units; discrete: action ids) out; the model sees
                                         # context(..., t, K)
        window.earn(t, reward)           # R_{t+1} = R_t - r_t / scale (0 if pre.zero_returns, R_t if
                                         # pre.delayed_rewards)

    discrete: pick actions from logits (`choose`) at `temperature`, episode i drawing from its own stream seeded
    seeds[i] (needed when temperature > 0)."""

    def __init__(self, targets: Sequence[float], pre: Preprocess, K: int, L: int, state_dim: int, act_dim: int,
                 discrete: bool = False, temperature: float = 0.0, seeds: Sequence[int] | None = None):
        N = len(targets)
        self.pre, self.K, self.L = pre, K, L
        self.discrete, self.temperature = discrete, temperature
        check_temperature(temperature, discrete)
        if temperature and (seeds is None or len(seeds) != N):
            raise ValueError(f"seeds: sampling at a temperature needs one seed per episode ({N}), got {seeds}")
        self.rngs = [np.random.default_rng(s) for s in seeds] if temperature else []
        self.states = np.zeros((N, L, state_dim), np.float32)
        self.actions = np.zeros((N, L, act_dim), np.float32)
        self.rtg = np.zeros((N, L), np.float32)
        if not pre.zero_returns:
            self.rtg[:, 0] = np.asarray(targets, np.float64) / pre.scale

    def act(self, model: DecisionTransformerModel, t: int, obs: np.ndarray) -> np.ndarray:
        """Record the raw observation obs (N, state_dim) as s_t, predict a_t at the token s_t and record it;
        returns a_t in the environment's units (N, act_dim) float32, or action ids (N,) int64 when discrete.
        Call under no_grad."""
        self.states[:, t] = (obs - self.pre.state_mean) / self.pre.state_std
        out = to_numpy(model.get_action(**context(self.states, self.actions, self.rtg, t, self.K)))  # N,act_dim
        if self.discrete:
            ids = choose(out, self.temperature, self.rngs)
            self.actions[:, t] = np.eye(out.shape[1], dtype=np.float32)[ids]
            return ids
        a = out.astype(np.float32)
        self.actions[:, t] = a
        return self.pre.env_actions(a).astype(np.float32)

    def earn(self, t: int, reward: Any) -> None:
        """reward (N,) or a scalar: r_t, received after a_t; the return still wanted at t + 1 is R_t - r_t."""
        if t + 1 < self.L and not self.pre.zero_returns:
            self.rtg[:, t + 1] = self.pre.next_return(self.rtg[:, t].astype(np.float64), reward)


@no_grad()
def rollout(model: DecisionTransformerModel, env_id: str, targets: Sequence[float], episodes: int,
            pre: Preprocess, K: int, seed: int = 0, max_steps: int | None = None,
            env_kwargs: dict | None = None, progress: bool = False, temperature: float = 0.0) -> list[dict]:
    """Run `episodes` episodes for each target return, all at once. Episode j of every target uses seed
    seed + j, so targets are compared on the same initial states (and, sampling a discrete model's actions at a
    temperature > 0, on the same random stream). Returns one dict per target."""
    model.eval()
    targets = [float(x) for x in targets]
    n_targets = len(targets)
    N = n_targets * episodes
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id, **(env_kwargs or {})) for _ in range(N)],
                                    autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    try:
        L = max_steps or envs.envs[0].spec.max_episode_steps or model.config.max_ep_len
        L = min(L, model.config.max_ep_len)
        seeds = [seed + j for _ in targets for j in range(episodes)]
        obs, _ = envs.reset(seed=seeds)
        window = EpisodeWindow(np.repeat(targets, episodes), pre, K, L, model.config.state_dim,
                               model.config.act_dim, model.config.discrete_actions, temperature, seeds)
        returns = np.zeros(N)
        lengths = np.zeros(N, np.int64)
        alive = np.ones(N, bool)
        steps = range(L)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc=f"evaluate {env_id}", leave=False)
        for t in steps:
            obs, reward, terminated, truncated, _ = envs.step(window.act(model, t, obs))
            returns += np.where(alive, reward, 0.0)
            lengths += alive
            window.earn(t, reward)
            alive &= ~(terminated | truncated)
            if not alive.any():
                break
    finally:
        envs.close()
    return summarize(targets, returns.reshape(n_targets, episodes), lengths.reshape(n_targets, episodes))


@no_grad()
def rollout_sequential(model: DecisionTransformerModel, env_id: str, targets: Sequence[float], episodes: int,
                       pre: Preprocess, K: int, seed: int = 0, max_steps: int | None = None,
                       env_kwargs: dict | None = None, temperature: float = 0.0) -> list[dict]:
    """The same evaluation one environment and one episode at a time, batch 1 per forward: the plain loop the
    vectorized version must equal."""
    model.eval()
    returns = np.zeros((len(targets), episodes))
    lengths = np.zeros((len(targets), episodes), np.int64)
    for i, target in enumerate(targets):
        for j in range(episodes):
            env = gym.make(env_id, **(env_kwargs or {}))
            L = min(max_steps or env.spec.max_episode_steps or model.config.max_ep_len, model.config.max_ep_len)
            obs, _ = env.reset(seed=seed + j)
            rng = np.random.default_rng(seed + j)
            states = np.zeros((1, L, model.config.state_dim), np.float32)
            actions = np.zeros((1, L, model.config.act_dim), np.float32)
            rtg = np.zeros((1, L), np.float32)
            rtg[0, 0] = 0.0 if pre.zero_returns else target / pre.scale
            for t in range(L):
                states[0, t] = (obs - pre.state_mean) / pre.state_std
                a = to_numpy(model(**context(states, actions, rtg, t, K)).action_preds)[:, -1]  # 1,act_dim
                if model.config.discrete_actions:
                    action = choose(a, temperature, [rng])[0]
                    actions[0, t] = np.eye(a.shape[1])[action]
                else:
                    actions[0, t] = a[0]
                    action = pre.env_actions(a[0].astype(np.float32)).astype(np.float32)
                obs, reward, terminated, truncated, _ = env.step(action)
                returns[i, j] += reward
                lengths[i, j] += 1
                if t + 1 < L and not pre.zero_returns:
                    rtg[0, t + 1] = pre.next_return(float(rtg[0, t]), float(reward))
                if terminated or truncated:
                    break
            env.close()
    return summarize(list(targets), returns, lengths)


def summarize(targets: list[float], returns: np.ndarray, lengths: np.ndarray) -> list[dict]:
    """returns, lengths (n_targets, episodes) -> one dict per target."""
    return [{"target_return": float(target), "return_mean": float(np.mean(r)), "return_std": float(np.std(r)),
             "length_mean": float(np.mean(n)), "episodes": int(r.size), "returns": [float(x) for x in r]}
            for target, r, n in zip(targets, returns, lengths)]


def add_normalized_scores(results: list[dict], score_fn: Any) -> list[dict]:
    """Adds normalized_score_mean / _std from score_fn(return) -> 100 (R - R_random) / (R_expert - R_random)."""
    for r in results:
        s = np.array([score_fn(x) for x in r["returns"]])
        r["normalized_score_mean"] = float(np.mean(s))
        r["normalized_score_std"] = float(np.std(s))
    return results
