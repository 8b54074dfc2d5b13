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
# # 10 · Return conditioning: ask for a return, see what you get
#
# *Full size: about 22 s on 2 idle CPU cores with tutorial 9's saved model (when tutorial 9 has to run first,
# add its time); `MINIDT_SMOKE=1`: seconds.*
#
# A Decision Transformer is a policy with a dial: the first return-to-go $R_0$, the return we ask for. Trained on
# data with returns from bad to good, it should act badly when asked for a bad return and well when asked for a
# good one. The paper's Figure 4 plots the return achieved against the return asked for; this tutorial draws it
# for Pendulum:
#
# 1. load the model tutorial 9 trained (or run tutorial 9 first, when it has not been run here);
# 2. the evaluation loop: ask, act, subtract the reward earned, ask again; the same window as in training;
# 3. many targets at once, vectorized over environments, and how to choose a target;
# 4. achieved against target, with $y = x$ and the dataset's best return; and what happens beyond the data.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the set-up"}
import atexit
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import spearmanr

from minidt.plots import figure_dir, show

SMOKE = os.environ.get("MINIDT_SMOKE") == "1"
# this tutorial's folder (a notebook runs there)
HERE = Path(globals().get("__file__", "notebook")).resolve().parent
# figures/ beside this file, or $MINIDT_FIGURES
FIGURES = figure_dir(globals().get("__file__"))
# tiny throwaway datasets: keep them out of the user's cache (~/.cache/minidt)
if SMOKE:
    os.environ["MINIDT_CACHE"] = tempfile.mkdtemp(prefix="minidt-cache-")
    atexit.register(shutil.rmtree, os.environ["MINIDT_CACHE"], ignore_errors=True)

import minidt
from minidt import DecisionTransformerGPT2Model, DecisionTransformerModel
from minidt.data import REF_MAX_SCORE, SegmentSampler, load_dataset, normalized_score
from minidt.evaluate import Preprocess, context, rollout, rollout_sequential

ENV = "Pendulum-v1"
EPISODES = 2 if SMOKE else 10  # evaluation episodes per target

# %% [markdown]
# ## 1. Tutorial 9's model
#
# Tutorial 9 trained a model on Pendulum full-replay and saved it (`save_pretrained`, plus its preprocessing) in
# `runs/09_training/` beside the tutorials. When it is there, it is loaded; when it is not, tutorial 9 is run
# first, as a script (that is most of this tutorial's run time).

# %%
SAVED = HERE / "runs" / ("09_training-smoke" if SMOKE else "09_training")
if not (SAVED / "tutorial09.json").exists():
    print(f"no model from tutorial 9 in {SAVED}: running tutorial 9 first")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / "09_training.py")], cwd=HERE,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tutorial 9 failed (exit {done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    print(f"tutorial 9 ran in {time.perf_counter() - t0:.0f} s")
saved = json.loads((SAVED / "tutorial09.json").read_text())
# float32 as trained; eval(): dropout off
model = DecisionTransformerModel.from_pretrained(SAVED).eval()
pre = Preprocess.from_dict(saved["preprocess"])
STEPS, K = saved["steps"], saved["K"]
print(f"loaded {SAVED.name}: {STEPS} training steps, final loss "
      f"{saved['final_loss']:.4f}, K = {K}, "
      f"hidden {model.config.hidden_size}, {model.config.n_layer} layers")
# the returns
data = load_dataset("full-replay", env=ENV, episodes=10 if SMOKE else None,
                    progress=not SMOKE)

# %% [markdown]
# ## 2. The evaluation loop
#
# At step $t$ the model sees the last $K$ steps of its own episode, $(\hat R_i, s_i, a_i)$ for
# $i = t-K+1 \dots t$, and its action is `action_preds[:, -1]`, read at the token $s_t$ (which cannot see $a_t$:
# a zero placeholder sits there). After the environment answers with reward $r_t$,
#
# $$\hat R_{t+1} = \hat R_t - r_t ,$$
#
# so the model is always told what is *still* wanted, in the units it was trained on ($\div$ scale). Early in an
# episode the window is left-padded, like the sampler's training segments, but not with the same values: the
# window pads with zeros everywhere (state, action, return-to-go, timestep), the sampler with the reference's
# values (the state $-\mu/\sigma$, the action $-10$). Section 2b shows why that does not matter. The window, from
# `minidt.evaluate.context`:

# %%
print(inspect.getsource(context))

# %% [markdown]
# A rollout step needs one number per episode, `action_preds[:, -1]`, and most of a forward pass does not feed
# it. The last action token $a_t$ comes after $s_t$, so causality already hides it: drop it. In the last block,
# every token's key and value are still needed (the token $s_t$ attends to all of them), but only $s_t$'s own
# query, attention row, MLP and `ln_f`. `model.get_action` computes just that (the last block is a one-token call
# with the other tokens' keys and values passed as `past_kv`, the path incremental decoding uses): about a
# quarter less work for a 3-layer model, and the same numbers. It runs under `minidt.no_grad()` (as `rollout`
# does): a rollout step keeps nothing for a backward pass. And it wants `model.eval()`, which switches dropout off
# (and nothing else), so that an evaluation acts deterministically:

# %%
source = inspect.getsource(DecisionTransformerGPT2Model.forward_last)
print(source[source.index("        *blocks"):])
S, A = model.config.state_dim, model.config.act_dim
x = context(np.random.default_rng(0).normal(size=(4, 30, S)).astype(np.float32),
            np.zeros((4, 30, A), np.float32), np.full((4, 30), -3.0, np.float32),
            t=12, K=K)
# get_action runs under no_grad itself; the full forward is inference here too
with minidt.no_grad():
    lean, full = model.get_action(**x), model(**x).action_preds[:, -1]
print("get_action vs forward(...).action_preds[:, -1]: max difference "
      f"{np.max(np.abs(lean - full)):.1e}")
assert np.allclose(lean, full, rtol=1e-5, atol=1e-6)

# %% [markdown]
# ### 2b. Two paddings, one action
#
# Users of the original code ask why training pads with $-\mu/\sigma$ and $-10$ while the evaluation loop pads
# with zeros. It does not matter, because a padded step is masked as a *key*: its attention score gets the most
# negative float, its weight $e^{\text{finfo.min} - \max}$ underflows to exactly 0, and nothing a real token
# computes depends on what the padded tokens hold (tutorial 5). Left padding makes the padded tokens come first,
# so no real token is a padded query either. Numerically: the same window, padded three ways.

# %%
rng = np.random.default_rng(1)
window = context(rng.normal(size=(1, 30, model.config.state_dim)).astype(np.float32),
                 rng.uniform(-1, 1, (1, 30, model.config.act_dim)).astype(np.float32),
                 # t = 4: 5 real steps, K - 5 padded
                 np.full((1, 30), -0.8, np.float32), t=4, K=K)
pad = window["attention_mask"][0] == 0
like_sampler = {k: (v.copy() if v is not None else None) for k, v in window.items()}
# the sampler's padded state
like_sampler["states"][0, pad] = -pre.state_mean / pre.state_std
like_sampler["actions"][0, pad] = -10.0  # the sampler's padded action
garbage = {k: (v.copy() if v is not None else None) for k, v in window.items()}
for key in ("states", "actions", "returns_to_go"):
    garbage[key][0, pad] = 1e3 * rng.normal(size=garbage[key][0, pad].shape)
windows = (("zeros (evaluation)", window), ("-mean/std, -10 (sampler)", like_sampler),
           ("random, 1e3 scale", garbage))
actions = {name: model.get_action(**w) for name, w in windows}
for name, a in actions.items():
    print(f"padded with {name:26s} action {a.ravel()}")
worst = max(float(np.max(np.abs(a - actions["zeros (evaluation)"])))
            for a in actions.values())
print(f"largest difference: {worst:.1e}")
assert worst < 1e-6, worst

# %% [markdown]
# ### 2c. The returns-to-go off by one?
#
# In training, slot $k$ of a segment starting at step $s$ holds $R_{s+k} = \sum_{i \ge s+k} r_i$: the reward of
# that step *included*. In a rollout, the window at step $t$ holds $\hat R_t = \hat R_0 - \sum_{i<t} r_i$: the
# reward of step $t$ not yet subtracted (it has not been earned when the action is chosen). Asked for exactly an
# episode's return, $\hat R_0 = R_0$, the two agree at every step: $\hat R_t = R_0 - \sum_{i<t} r_i
# = \sum_{i\ge t} r_i = R_t$. No off-by-one. (The reference's `get_batch` slices $K+1$ returns-to-go per segment,
# padding with a 0 at the episode's end, and feeds the model the first $K$: the extra one would be the target of
# the return head, $R_{t+1}$, which the paper never trains. minidt's sampler returns the $K$ inputs.)
#
# Replaying a recorded episode through the rollout's update gives the sampler's window exactly:

# %%
episode = data[0]
rtg_rollout = np.zeros((1, len(episode)), np.float32)
rtg_rollout[0, 0] = episode.ret / pre.scale
for t in range(len(episode) - 1):
    # the rollout's update
    rtg_rollout[0, t + 1] = rtg_rollout[0, t] - episode.rewards[t] / pre.scale
states = (episode.observations - pre.state_mean) / pre.state_std
states = states[None].astype(np.float32)
t = len(episode) // 2
eval_window = context(states, np.zeros((1, len(episode), data.act_dim), np.float32),
                      rtg_rollout, t=t, K=K)
sampler = SegmentSampler(data, K=K, max_ep_len=model.config.max_ep_len)
train_window = sampler.gather(np.array([0]), np.array([t - K + 1]))
err_rtg = np.max(np.abs(eval_window["returns_to_go"] - train_window["returns_to_go"]))
err_states = np.max(np.abs(eval_window["states"] - train_window["states"]))
same_t = np.array_equal(eval_window["timesteps"], train_window["timesteps"])
print(f"window at t = {t}: returns-to-go rollout vs sampler max difference "
      f"{err_rtg:.1e}; states {err_states:.1e}; timesteps equal: {same_t}")
assert err_rtg < 1e-5 and err_states < 1e-5
assert np.array_equal(eval_window["timesteps"], train_window["timesteps"])

# %% [markdown]
# Running one environment at a time would cost one model call per step per episode. `minidt.evaluate.rollout`
# runs every episode of every target in one gymnasium vector environment, one batched `get_action` per step. Episode
# $j$ of every target starts from the same seed, so targets are compared on the same initial states: the
# difference between two targets' returns is the target's doing, not the luck of the draw. The vectorized loop
# must equal the plain one (`rollout_sequential`) on the same seeds; a quick check on a short horizon:

# %%
check = dict(env_id=ENV, targets=[-800.0, -200.0], episodes=2, pre=pre, K=K, seed=123,
             max_steps=25)
fast, slow = rollout(model, **check), rollout_sequential(model, **check)
for f, s in zip(fast, slow):
    print(f"target {f['target_return']:7.1f}: vectorized {np.round(f['returns'], 4)}  "
          f"sequential {np.round(s['returns'], 4)}")
    assert np.allclose(f["returns"], s["returns"], rtol=1e-5, atol=1e-4), \
        (f["returns"], s["returns"])

# %% [markdown]
# ## 3. Many targets, and how to choose one
#
# Which $R_0$ should one ask for? The paper used one or two fixed targets per environment (its gym code:
# Hopper 3600 and 1800, HalfCheetah 12000 and 6000, Walker 5000 and 2500), about the best return in the D4RL data
# and half of it. A rule that needs no knowledge of the environment: the mean return of the dataset's best 10% of
# episodes, an expert-level return that the data shows often (its single best episode is often an outlier: here, a
# pendulum that happened to start upright). `minidt train` evaluates at that target too. And the honest answer is
# a sweep, which is what this section does: targets span the dataset's returns, from its worst episode to its
# best, plus the best decile's mean, and go beyond: Pendulum's rewards are never positive, so a return above 0 is
# impossible, and one above the data's best has never been seen.

# %%
lo, hi = float(data.returns.min()), float(data.returns.max())
best_decile = float(np.mean(np.sort(data.returns)[-max(1, len(data) // 10):]))
inside = np.sort(np.append(np.linspace(lo, hi, 4 if SMOKE else 10), best_decile))
beyond = np.array([hi + 200.0] if SMOKE else [hi + 100.0, hi + 300.0, hi + 600.0])
targets = np.concatenate([inside, beyond])
t0 = time.perf_counter()
results = rollout(model, ENV, targets, EPISODES, pre, K, seed=10_000)
seconds = time.perf_counter() - t0
print(f"{len(targets)} targets x {EPISODES} episodes in {seconds:.0f} s")
achieved = np.array([r["return_mean"] for r in results])
spread = np.array([r["return_std"] for r in results])
print(f"{'target':>9s} {'achieved':>17s} {'normalized':>10s}")
for target, m, s in zip(targets, achieved, spread):
    print(f"{target:9.1f} {m:9.1f} +- {s:5.1f} {normalized_score(ENV, m):10.1f}"
          + ("   beyond the data" if target > hi else "")
          + ("   the best decile's mean" if target == best_decile else ""))

if np.ptp(achieved[: len(inside)]) > 0:
    rho = float(spearmanr(inside, achieved[: len(inside)]).statistic)
    print("rank correlation (Spearman) of achieved with target, inside the data: "
          f"{rho:.2f}")
else:  # the model ignores its target (a smoke-size training): ranks are undefined
    rho = float("nan")
    print("the same return at every target: rank correlation undefined")

# %%
fig, ax = plt.subplots(figsize=(7, 5.5))
ax.axvspan(lo, hi, color="0.92", label="returns in the dataset")
ax.fill_between(targets, achieved - spread, achieved + spread, alpha=0.25,
                color="tab:blue")
ax.plot(targets, achieved, "o-", color="tab:blue",
        label=f"achieved: mean +- std over {EPISODES} episodes")
edge = [min(targets.min(), (achieved - spread).min()), targets.max()]
ax.plot(edge, edge, "k--", lw=1, label="y = x (perfect conditioning)")
ax.axhline(hi, color="tab:red", ls="--", lw=2, zorder=3,
           label=f"best return in the dataset ({hi:.1f})")
ax.axvline(best_decile, color="tab:green", ls=":", lw=1.5,
           label=f"target: best decile's mean ({best_decile:.1f})")
ax.set_xlabel("target return $R_0$")
ax.set_ylabel("achieved return")
ax.set_title(f"{ENV} / full-replay, {STEPS} training steps: Spearman {rho:.2f}")
ax.legend(loc="lower right", fontsize=8)
show(fig, FIGURES / "10_return_conditioning.png")

if not SMOKE:  # claims only at full size: a 20-step model conditions on nothing
    assert rho > 0.8, rho

# %% [markdown]
# ## 4. Reading the plot, and beyond the data
#
# Inside the data the achieved return follows the target: the model learned which actions go with which
# returns-to-go, and the ordering is what the rank correlation measures. It cannot follow $y = x$ to the top. A
# Pendulum episode's return depends heavily on where the pendulum starts (hanging down, it must spend reward
# swinging up), so the best returns in the data come from lucky starts, and from an ordinary start no behaviour
# in the data earns them. The achieved return tops out near what the expert typically earns; asking for more,
# even within the data's range, buys nothing more.
#
# The bottom flattens too. Asked for a very low return, the model should act like the random policy that earned
# such returns, but a model trained with a squared error predicts the *mean* of the actions it saw, and the mean
# of uniformly random torques is a steady torque near zero, which loses less than random flailing does.
#
# Beyond the data, the returns-to-go input takes values the model never saw in training. Nothing in the loss
# taught it what to do there, and it does not extrapolate to a better policy: the achieved return stays at or
# below the best it reached inside the data, and typically falls as the target moves further out (the model
# is being asked for an input unlike any it was trained on). A Decision Transformer imitates the part of the data
# that matches the return it is asked for. Nothing in its training objective rewards doing better than the data,
# unlike value-based offline RL, which can stitch the good pieces of different episodes together. That is a
# tendency, not a law: the paper reports that on Atari's Seaquest, prompted with returns above the best in its
# dataset, the Decision Transformer did score above that best, so it can sometimes extrapolate a little. On
# Pendulum, whose best episodes are close to the best possible, there is no room to. The numbers from this run:

# %%
best_inside = int(np.argmax(achieved[: len(inside)]))
print(f"best achieved inside the data: {achieved[best_inside]:.1f} at target "
      f"{inside[best_inside]:.1f} (the dataset's best episode {hi:.1f}; the expert "
      f"tier's mean return {REF_MAX_SCORE['pendulum']:.1f})")
for target, m in zip(beyond, achieved[len(inside):]):
    print(f"target {target:7.1f} (beyond the data): achieved {m:7.1f}, "
          f"{m - achieved[best_inside]:+7.1f} against the best inside")

# %% [markdown]
# ## Exercises
#
# **1. Predict, then run: no memory.** Evaluate the same model with a context of one step, `K = 1`: the model
# then sees only the current return-to-go and state (positions are all zero, so a shorter window is a valid
# input). Will the achieved return still follow the target? Better or worse than with $K = 20$?
#
# **2. Plant a bug: forget to normalize the states.** Evaluate with a `Preprocess` whose state mean is 0 and
# standard deviation 1 (the raw observation goes in). What happens to the achieved returns, and which number of
# this tutorial would catch the bug?
#
# **3. Derive before the reveal.** Pendulum's reward is at most 0 per step. Asked for a target $R_0 > 0$, what
# return-to-go does the model see at step $t$, and why is that input unlike anything in the training data from
# the very first step?
#
# ### Solutions
#
# Each solution is one cell, collapsed in the book; in the script, everything below this line is the solutions.

# %% tags=["hide-cell"]
# Solution 1: K = 1 against K = 20 on three targets inside the data.
probe = [lo + 0.25 * (hi - lo), best_decile, hi]
for k in (K, 1):
    res = rollout(model, ENV, probe, EPISODES, pre, k, seed=20_000)
    print(f"K = {k:2d}: achieved", [round(r["return_mean"], 1) for r in res],
          "at targets", np.round(probe, 1))
# Pendulum is fully observed (the state holds the angle and the angular velocity), so
# the current state and the return still wanted carry most of what the action needs: the
# one-step model still follows the target, but falls short at the high targets (at full
# size about 100 less than with K = 20): it cannot see how its own recent actions played
# out, and it was never trained on one-step windows.

# %% tags=["hide-cell"]
# Solution 2: raw states instead of normalized ones.
raw = Preprocess(np.zeros_like(pre.state_mean), np.ones_like(pre.state_std), pre.scale,
                 pre.action_low,
                 pre.action_high)
good, bad = (rollout(model, ENV, probe, EPISODES, p, K, seed=20_000)
             for p in (pre, raw))
print("normalized states: achieved", [round(r["return_mean"], 1) for r in good])
print("raw states:        achieved", [round(r["return_mean"], 1) for r in bad])
# The angular velocity reaches +-8 where the model saw values of order 1, so its inputs
# are off the training distribution and the policy is another one: at full size the
# achieved return falls to about the random policy's at every target, and no longer
# follows the target. The curve of achieved against target (its rank correlation, the
# asserted rho > 0.8) is what exposes it: a test of return conditioning tests the
# preprocessing too.

# %% [markdown]
# :::{dropdown} Solution 3
# With $\hat R_0 > 0$ and every reward $r_i \le 0$, the return-to-go $\hat R_t = \hat R_0 - \sum_{i<t} r_i$ only
# grows: the model is asked for ever more. In training, $R_t = \sum_{i \ge t} r_i \le 0$ at every step of every
# episode, so a positive input was never seen, not even at $t = 0$. Whatever the model does there is an
# extrapolation of the embedding `embed_return` (a linear map, so the input just moves further along one
# direction), not something the loss taught it.
# :::
