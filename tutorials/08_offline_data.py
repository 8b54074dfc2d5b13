# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Offline data: trajectories, returns-to-go, the segment sampler, dataset tiers
#
# *Full size: about 33 s on 2 idle CPU cores; `MINIDT_SMOKE=1`: seconds.*
#
# Offline reinforcement learning learns from a fixed set of recorded episodes; it never acts during training. The
# Decision Transformer turns that into sequence modelling: given the return still wanted, the states seen and the
# actions taken, predict the next action. This tutorial builds that training data for Pendulum-v1:
#
# 1. what an episode holds;
# 2. returns-to-go, derived and checked;
# 3. the K-segment sampler: which segments it draws and how it pads them;
# 4. the dataset tiers (random, medium, expert, and the mixtures), as histograms of their returns.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the set-up"}
import atexit
import inspect
import os
import shutil
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from minidt.plots import figure_dir, show

SMOKE = os.environ.get("MINIDT_SMOKE") == "1"
# figures/ beside this file, or $MINIDT_FIGURES
FIGURES = figure_dir(globals().get("__file__"))

# Generated datasets are cached (in Minari's format) under $MINIDT_CACHE, else
# ~/.cache/minidt. A smoke run makes tiny throwaway datasets: keep them in a temporary
# directory, out of the user's cache.
if SMOKE:
    os.environ["MINIDT_CACHE"] = tempfile.mkdtemp(prefix="minidt-cache-")
    atexit.register(shutil.rmtree, os.environ["MINIDT_CACHE"], ignore_errors=True)

from minidt.data import (TIERS, Episode, SegmentSampler, TrajectoryDataset, cache_dir,
                         load_dataset,
                         normalized_score, returns_to_go)
from minidt.data.sampler import PAD_ACTION

ENV = "Pendulum-v1"
# None: the default size of a generated dataset (200 episodes)
EPISODES = 4 if SMOKE else None
print("datasets cached in", cache_dir())

# %% [markdown]
# ## 1. Episodes
#
# minidt generates its datasets by running a scripted controller in the real gymnasium environment, with a
# probability $\epsilon$ of taking a uniformly random action instead (the tiers below differ only in $\epsilon$).
# The first call runs the episodes and writes the dataset; later calls read it from the cache.
#
# An episode of $T$ steps holds $T$ states $s_0 \dots s_{T-1}$, the actions $a_t$ taken in them and the rewards
# $r_t$ received. Pendulum's state is $(\cos\theta, \sin\theta, \dot\theta)$, its action a torque in $[-2, 2]$, its
# reward $-(\theta^2 + 0.1\dot\theta^2 + 0.001 u^2) \in [-16.3, 0]$: zero only when upright and still. Every
# episode is cut at 200 steps (a truncation, not a termination: the pendulum would go on).

# %%
data = load_dataset("medium", env=ENV, episodes=EPISODES, progress=not SMOKE)
print(data)
ep = data[0]
print(f"episode 0: {len(ep)} steps, observations {ep.observations.shape} "
      f"{ep.observations.dtype}, "
      f"actions {ep.actions.shape}, rewards {ep.rewards.shape}, return {ep.ret:.1f}")
print("first steps (cos th, sin th, thdot | torque | reward):")
for t in range(3):
    print("  ", np.round(ep.observations[t], 3), "|", np.round(ep.actions[t], 3), "|",
          round(ep.rewards[t], 3))
print("terminated:", ep.terminations.any(), " truncated at the last step:",
      ep.truncations[-1])

# %% [markdown]
# ## 2. Returns-to-go
#
# The Decision Transformer is not told the reward it just got but the return it still wants: the
# **return-to-go**
#
# $$R_t = \sum_{t'=t}^{T-1} r_{t'} ,$$
#
# undiscounted, as in the paper. At test time we choose $R_0$ (the return we ask for) and subtract each reward as it
# arrives; in training, $R_t$ is read off the recorded episode. Splitting off the first term gives the recursion
#
# $$R_t = r_t + R_{t+1}, \qquad R_T = 0 ,$$
#
# which computes all of them in one backward pass: $R$ is the cumulative sum of the *reversed* rewards, reversed
# back. $O(T)$ instead of the $O(T^2)$ of summing each tail separately. minidt's function:

# %%
print(inspect.getsource(returns_to_go))

rewards = ep.rewards
R = returns_to_go(rewards)
R_loop = np.zeros(len(rewards) + 1)  # R_loop[T] = 0
for t in reversed(range(len(rewards))):
    R_loop[t] = rewards[t] + R_loop[t + 1]  # the recursion, one step at a time
# the definition, O(T^2)
R_naive = np.array([rewards[t:].sum() for t in range(len(rewards))])
assert np.allclose(R, R_loop[:-1], rtol=0, atol=1e-9)
assert np.allclose(R, R_naive, rtol=0, atol=1e-9)
# R_0 is the return; R_{T-1} the last r
assert abs(R[0] - ep.ret) < 1e-9 and abs(R[-1] - rewards[-1]) < 1e-12
print(f"R_0 = {R[0]:.2f} is the episode's return; R_(T-1) = {R[-1]:.3f} is its last "
      "reward")

fig, ax = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
ax[0].plot(rewards)
ax[0].set_ylabel("reward $r_t$")
ax[1].plot(R)
ax[1].set_ylabel("return-to-go $R_t$")
ax[1].set_xlabel("timestep $t$")
ax[0].set_title(f"{ENV}, one medium episode")
show(fig, FIGURES / "08_returns_to_go.png")

# %% [markdown]
# The returns-to-go climb towards 0 as the episode runs out of time: a Pendulum reward is never positive, so
# less time left means less (negative) return left. The swing-up costs the most reward; once the pendulum is up,
# $R_t$ barely moves, until the medium policy's random actions knock it down and it must swing up again.

# %% [markdown]
# ## 3. The segment sampler
#
# The model sees $K$ timesteps at a time (the paper uses $K = 20$), three tokens each. A training batch is $B$
# segments cut from random places in the data, as the reference code's `get_batch` draws them:
#
# - episode $i$ with probability $T_i / \sum_j T_j$, then a start uniform in $[0, T_i - 1]$. Together: every
#   *timestep* of the dataset is equally likely to start a segment, so long episodes are not under-represented;
# - the segment holds timesteps $\text{start} \dots \text{start} + \ell - 1$, $\ell = \min(K, T_i - \text{start})$.
#   When $\ell < K$ the segment is **left**-padded: real steps at the right end, so the newest step is always the
#   last slot, exactly where evaluation reads its action (`action_preds[:, -1]`).
#
# Pendulum's episodes all last 200 steps, which makes length-proportional sampling uniform. To see the
# proportionality, three episodes of lengths 5, 15 and 30:

# %%
def toy_episode(T: int, value: float) -> Episode:
    return Episode(observations=np.full((T, 3), value), actions=np.zeros((T, 1)),
                   rewards=np.ones(T), terminations=np.zeros(T, bool),
                   truncations=np.eye(1, T, T - 1, dtype=bool)[0])


toy = TrajectoryDataset([toy_episode(5, 0.0), toy_episode(15, 1.0),
                         toy_episode(30, 2.0)], name="toy")
toy_sampler = SegmentSampler(toy, K=4, max_ep_len=64, seed=0)
n_draws = 20_000
episode, start = toy_sampler.draw(n_draws)
freq = np.bincount(episode, minlength=3) / n_draws
expected = toy.lengths / toy.lengths.sum()
print("episode frequencies", np.round(freq, 3), " expected T_i / sum T_j",
      np.round(expected, 3))
# 3.5 standard deviations of a frequency near 0.5 at 20k draws
assert np.max(np.abs(freq - expected)) < 0.02
assert np.all(start < toy.lengths[episode])

# %% [markdown]
# What a padded slot holds, and why:
#
# | field | real slot | padded slot |
# |---|---|---|
# | `states` | $(s - \mu)/\sigma$ | the zero state, normalized like the others: $-\mu/\sigma$ |
# | `actions` | $a$ | $-10$, far outside any action box |
# | `returns_to_go` | $R_t / \text{scale}$ | 0 |
# | `timesteps` | $t$ | 0 |
# | `attention_mask` | 1 | 0 |
#
# These are the reference code's values. None of them matters to a real output, since padded keys are masked out
# of attention (tutorial 7 checked that) and padded slots are excluded from the loss, but they must be finite.
# $\mu, \sigma$ are the dataset's per-dimension state mean and standard deviation ($+10^{-6}$, so a constant
# dimension does not divide by zero); returns-to-go are divided by a fixed `scale` (1000 for Pendulum, whose
# returns lie in about $[-1600, 0]$) so the model sees numbers of order one. Below, a segment that starts 3 steps
# before the end of an episode: 3 real slots, $K - 3$ padded.

# %%
K = 20
sampler = SegmentSampler(data, K=K, max_ep_len=200, seed=0)
T0 = len(data[0])
# the last 3 steps of episode 0
batch = sampler.gather(np.array([0]), np.array([T0 - 3]))
for key, value in batch.items():
    print(f"{key:15s} {str(value.shape):12s} {value.dtype}")
mask = batch["attention_mask"][0]
print("attention_mask", mask.astype(int))
print("timesteps     ", batch["timesteps"][0])
print("returns_to_go ", np.round(batch["returns_to_go"][0, :, 0], 4))

real = mask > 0
assert real.tolist() == [False] * (K - 3) + [True] * 3
assert np.allclose(batch["states"][0, ~real], -data.state_mean / data.state_std,
                   atol=1e-6)
assert np.all(batch["actions"][0, ~real] == PAD_ACTION) and PAD_ACTION == -10.0
assert np.all(batch["returns_to_go"][0, ~real] == 0)
assert np.all(batch["timesteps"][0, ~real] == 0)
# real slots: normalized states, and each state sits with the return-to-go from its own
# timestep
obs = data[0].observations[T0 - 3:]
assert np.allclose(batch["states"][0, real], (obs - data.state_mean) / data.state_std,
                   atol=1e-5)
assert np.allclose(batch["returns_to_go"][0, real, 0],
                   data[0].returns_to_go[T0 - 3:] / data.scale, atol=1e-6)
assert batch["timesteps"][0, real].tolist() == [T0 - 3, T0 - 2, T0 - 1]

# %% [markdown]
# A random batch is one call, and its dictionary is exactly the keyword arguments of the model's forward pass:
# `model(**sampler.sample(64))`. Across a large batch, the share of padded slots is what the start distribution
# predicts: a start in the last $K - 1$ steps of an episode pads $K - \ell$ slots.

# %%
big = sampler.sample(4096)
pad_share = 1 - big["attention_mask"].mean()
T_ep = 200
# all Pendulum episodes last 200 steps
predicted = sum(K - min(K, T_ep - s) for s in range(T_ep)) / (T_ep * K)
print(f"padded share of slots: {pad_share:.4f} (predicted {predicted:.4f})")
assert abs(pad_share - predicted) < 0.01

# %% [markdown]
# ## 4. Dataset tiers
#
# D4RL named its datasets by the policy that collected them, and minidt generates the same tiers in Pendulum:
#
# | tier | policy |
# |---|---|
# | random | uniform random actions ($\epsilon = 1$) |
# | medium | random actions with probability $\epsilon$ tuned so the normalized score is about 50 |
# | expert | the scripted controller with small action noise ($\epsilon = 0$) |
# | medium-replay | $\epsilon$ falling from 1 to medium's over the episodes: a learning curve up to medium |
# | full-replay | $\epsilon$ falling from 1 to 0: the learning curve all the way to expert |
# | medium-expert | the medium episodes followed by the expert ones |
#
# A normalized score puts returns on one scale across environments:
# $100\,(R - R_\text{random}) / (R_\text{expert} - R_\text{random})$, 0 for the random policy, 100 for the expert.
# The histograms show what each tier gives a learner: a narrow band (random, expert), a spread (the replays), or
# two modes (medium-expert). Return conditioning (tutorial 10) can only learn the returns the data shows.

# %%
tiers = {tier: load_dataset(tier, env=ENV, episodes=EPISODES, progress=not SMOKE)
         for tier in TIERS}
print(f"{'tier':14s} {'episodes':>8s} {'mean return':>12s} {'min':>8s} {'max':>8s} "
      f"{'normalized':>10s}")
for tier, d in tiers.items():
    print(f"{tier:14s} {len(d):8d} {d.returns.mean():12.1f} {d.returns.min():8.1f} "
          f"{d.returns.max():8.1f} "
          f"{normalized_score(ENV, d.returns.mean()):10.1f}")

# medium-expert is exactly medium's episodes then expert's: each episode is seeded by
# (seed, tier, index) alone
me = tiers["medium-expert"].returns
assert np.array_equal(me, np.concatenate([tiers["medium"].returns,
                                          tiers["expert"].returns]))
if not SMOKE:  # with 200 episodes each, the tiers are ordered as their names say
    means = {t: d.returns.mean() for t, d in tiers.items()}
    assert means["random"] < means["medium"] < means["expert"], means
    assert 40 < normalized_score(ENV, means["medium"]) < 60, means

fig, axes = plt.subplots(len(TIERS), 1, figsize=(7, 1.6 * len(TIERS)), sharex=True)
bins = np.linspace(min(d.returns.min() for d in tiers.values()), 0, 41)
for ax, (tier, d) in zip(axes, tiers.items()):
    ax.hist(d.returns, bins=bins, color="tab:blue", alpha=0.8)
    ax.axvline(d.returns.mean(), color="k", lw=1, ls="--")
    ax.set_ylabel(tier, rotation=0, ha="right", va="center")
    ax.set_yticks([])
axes[-1].set_xlabel("episode return (dashed: mean)")
axes[0].set_title(f"{ENV}: returns of each dataset tier ({len(tiers['medium'])} "
                  "episodes each, "
                  f"{len(tiers['medium-expert'])} in medium-expert)")
show(fig, FIGURES / "08_return_histograms.png")

# %% [markdown]
# Next, tutorial 9 trains on these segments: the loop written out, forward, loss, backward, clip, AdamW.

# %% [markdown]
# ## Exercises
#
# **1. Predict, then run.** With $K = 50$ instead of 20, what share of a large batch's slots is padding? Work it
# out from the start distribution (every start in the last $K-1$ steps of a 200-step episode pads
# $K - \ell$ slots), then sample.
#
# **2. Plant a bug, watch the check catch it.** Compute returns-to-go with a *forward* cumulative sum,
# `np.cumsum(rewards)`. Which of the section-2 assertions fails first?
#
# **3. Derive before the reveal.** Suppose the sampler drew the episode *uniformly* (not in proportion to its
# length), then a start uniform within it. With the toy episodes of lengths 5, 15 and 30, how likely is any one
# timestep of the short episode to start a segment, against one of the long episode?
#
# ### Solutions
#
# Each solution is one cell, collapsed in the book; in the script, everything below this line is the solutions.

# %% tags=["hide-cell"]
# Solution 1: sum over starts s of (K - min(K, 200 - s)) / (200 K) = (K - 1) / (2 * 200)
# for K <= 200: 0.1225.
K50 = 50
predicted50 = sum(K50 - min(K50, T_ep - s) for s in range(T_ep)) / (T_ep * K50)
sampler50 = SegmentSampler(data, K=K50, max_ep_len=200, seed=1)
share50 = 1 - sampler50.sample(4096)["attention_mask"].mean()
print(f"K = 50: predicted {predicted50:.4f} = (K - 1) / 400 = {(K50 - 1) / 400:.4f}; "
      f"sampled {share50:.4f}")
assert abs(share50 - predicted50) < 0.01

# %% tags=["hide-cell"]
# Solution 2: the forward sum is the return *so far*: R[0] = r_0, not the episode's
# return, so the check against the loop (and R_0 == episode return) fails.
R_bug = np.cumsum(rewards)
print(f"forward cumsum: R[0] = {R_bug[0]:.2f}, the episode's return is {ep.ret:.2f}; "
      "matches the loop: "
      f"{np.allclose(R_bug, R_loop[:-1], atol=1e-9)}")
assert not np.allclose(R_bug, R_loop[:-1], atol=1e-9)

# %% [markdown]
# :::{dropdown} Solution 3
# Each episode is chosen with probability $1/3$, then each of its $T_i$ starts with probability $1/T_i$: a
# timestep of episode $i$ starts a segment with probability $1/(3T_i)$, that is $1/15$ for the short episode
# against $1/90$ for the long one, six times as often. Uniform episodes over-sample short episodes' steps; drawing
# episode $i$ with probability $T_i/\sum_j T_j$ makes every timestep equally likely, $1/\sum_j T_j = 1/50$.
# Check with `toy_sampler`: its `draw` gives each (episode, start) pair a frequency near $1/50$.
# :::
