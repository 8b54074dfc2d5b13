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
# # 09 · Training on Pendulum: the loop written out
#
# *Full size: about 2 min on 2 idle CPU cores; `MINIDT_SMOKE=1`: seconds.*
#
# Every piece exists now: the model with its backward pass (checked against transformers in tutorial 7), the
# segment sampler (tutorial 8), a loss, an optimizer. Training is five lines repeated:
#
# ```
# batch = sampler.sample(B)                  K-step segments, left-padded, with a mask
# out = model(**batch)                       action_preds (B, K, act_dim), read at the state tokens
# loss, daction = masked_mse(...)            mean squared error over real timesteps, and dL/d(action_preds)
# model.backward(action_preds=daction)       dL/dtheta into every Parameter.grad
# clip_grad_norm_(...); opt.step()           AdamW with a linear warm-up
# ```
#
# `minidt train --env Pendulum-v1 --dataset full-replay` runs this same loop with checkpoints, resuming and
# evaluation; here it is in the open.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the set-up"}
import atexit
import inspect
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np

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

from minidt import DecisionTransformerConfig, DecisionTransformerModel
from minidt.backend import to_numpy
from minidt.data import SegmentSampler, load_dataset
from minidt.evaluate import Preprocess
from minidt.files import atomic_write_text
from minidt.losses import masked_mse
from minidt.optim import AdamW, LinearWarmup, clip_grad_norm_, param_groups_no_decay

ENV = "Pendulum-v1"
STEPS = 30 if SMOKE else 1000
BATCH = 16 if SMOKE else 64
K = 20  # the paper's context length for its gym tasks

# %% [markdown]
# ## Data and preprocessing
#
# The full-replay tier: a simulated learning curve from a random policy to the expert, so the data holds every
# return from about $-1700$ to $0$. Three kinds of preprocessing, all stored with a checkpoint because evaluation
# must repeat them exactly (`minidt.evaluate.Preprocess`):
#
# - states: $(s - \mu)/\sigma$ (the sampler does it);
# - returns-to-go: divided by `scale` = 1000 (the sampler does it);
# - actions: mapped from the environment's box $[\text{low}, \text{high}] = [-2, 2]$ to $[-1, 1]$, because the
#   model's action head ends in $\tanh$ (`action_tanh=True`) and could never reach $\pm 2$. Padded slots keep the
#   sampler's $-10$.

# %%
data = load_dataset("full-replay", env=ENV, episodes=10 if SMOKE else None,
                    progress=not SMOKE)
print(data)
space = gym.make(ENV).action_space
pre = Preprocess(data.state_mean, data.state_std, data.scale,
                 space.low.astype(np.float64),
                 space.high.astype(np.float64))
a = np.array([[-2.0], [0.0], [1.0], [2.0]])
print("torques", a.ravel(), "-> model actions", pre.normalize_actions(a).ravel())
# the two maps are inverses on the box
assert np.allclose(pre.env_actions(pre.normalize_actions(a)), a)

# 200: the timestep embedding needs one row per step
max_ep_len = gym.make(ENV).spec.max_episode_steps
sampler = SegmentSampler(data, K=K, max_ep_len=max_ep_len, seed=0)


def training_batch(sampler: SegmentSampler, batch_size: int) -> dict[str, np.ndarray]:
    """A sampler batch with actions in the model's [-1, 1] (padding stays -10)."""
    batch = sampler.sample(batch_size)
    real = batch["attention_mask"][..., None] > 0  # B,K,1
    actions = np.where(real, pre.normalize_actions(batch["actions"]), -10.0)
    batch["actions"] = actions.astype(np.float32)
    return batch


# %% [markdown]
# ## The model
#
# Smaller than the paper's (hidden 128, 3 layers) so that a CPU trains it in minutes: hidden size 64, two layers,
# one head, ReLU MLPs, dropout 0.1. `max_ep_len` is the size of the timestep embedding: Pendulum's 200 steps.

# %%
config = DecisionTransformerConfig(
    state_dim=data.state_dim, act_dim=data.act_dim, hidden_size=16 if SMOKE else 64,
    n_layer=1 if SMOKE else 2, n_head=1, n_inner=None, activation_function="relu",
    max_ep_len=max_ep_len, action_tanh=True,
    resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
model = DecisionTransformerModel(config, dtype="float32", seed=0)
print(sum(int(np.prod(p.shape)) for p in model.parameters()), "parameters")

# %% [markdown]
# ## The loss
#
# The paper trains on actions alone. With $m_{bk} \in \{0, 1\}$ the mask, $N = \sum_{bk} m_{bk}$ the number of real
# timesteps and $d$ the action dimension,
#
# $$L = \frac{1}{N d} \sum_{b,k} m_{bk} \sum_{j=1}^{d} (\hat a_{bkj} - a_{bkj})^2, \qquad
#   \frac{\partial L}{\partial \hat a_{bkj}} = \frac{2\, m_{bk} (\hat a_{bkj} - a_{bkj})}{N d} .$$
#
# The gradient is zero at padded slots, which is what keeps the meaningless padded rows out of training. minidt
# writes it with `where` rather than a multiplication by the mask: a padded prediction times 0 is NaN if the
# prediction is NaN. (`masked_mse` is assignment 6's: minidt's code is after the exercises.)

# %%
rng = np.random.default_rng(0)
pred, target = rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 5, 2))
mask = (rng.random((3, 5)) > 0.4).astype(np.float64)
mask[0, -1] = 1.0
loss, dpred = masked_mse(pred, target, mask)
num = np.zeros_like(pred)
for i in np.ndindex(pred.shape):  # central differences in float64
    h = np.zeros_like(pred)
    h[i] = 1e-6
    num[i] = (masked_mse(pred + h, target, mask)[0]
              - masked_mse(pred - h, target, mask)[0]) / 2e-6
err = np.max(np.abs(num - dpred)) / np.max(np.abs(dpred))
print(f"masked_mse gradient against finite differences: relative error {err:.1e}")
assert err < 1e-6, err

# %% [markdown]
# ## The optimizer
#
# AdamW with a linear warm-up and gradient clipping, as the paper's trainer has them, with the learning rate and
# warm-up scaled for a short run (the original gym code: learning rate $10^{-4}$, $10^4$ warm-up steps, $10^5$
# steps). Here: learning rate $10^{-3}$ reached by a linear warm-up
# ($\text{lr}_t = \text{lr} \cdot \min(1, (t+1)/\text{warmup})$: Adam's first steps, taken with poorly estimated
# second moments, are the ones most likely to throw a transformer off) and the gradient's global norm clipped at
# 0.25 before each step. Weight decay $10^{-4}$ is where minidt departs from the original: the original trainer
# decays *every* parameter (`AdamW(model.parameters(), weight_decay=1e-4)`), minidt's `param_groups_no_decay`
# only the weight matrices (linear layers and embeddings), as minGPT and nanoGPT do, because pulling a LayerNorm
# gain or a bias towards zero regularizes nothing (a gain of 0 switches the layer off). With decay this small the
# two choices train alike; `minidt train` uses the same groups.
#
# The clipping rule:
#
# $$g \leftarrow g \cdot \min\left(1, \frac{0.25}{\lVert g \rVert_2 + 10^{-6}}\right), \qquad
#   \lVert g \rVert_2 = \sqrt{\textstyle\sum_{\text{parameters}} \lVert g_p \rVert_2^2} .$$
#
# All three match PyTorch's `AdamW`, `LambdaLR` and `clip_grad_norm_` step for step (tests/test_optim.py).

# %%
LR, WARMUP, CLIP = 1e-3, 10 if SMOKE else 100, 0.25
opt = AdamW(param_groups_no_decay(model.named_parameters(), weight_decay=1e-4), lr=LR)
sched = LinearWarmup(opt, WARMUP)
print([(len(g["params"]), g["weight_decay"]) for g in opt.param_groups],
      "(parameters, weight decay) per group")

# %% [markdown]
# ## The loop
#
# `model.train()` turns dropout on; every layer keeps the cache its backward needs, because grad mode is on (the
# default, as in PyTorch; inside `with minidt.no_grad():` nothing would be kept). `model.zero_grad()`
# matters: gradients *accumulate* into `Parameter.grad`, as in PyTorch. Only `action_preds` gets a gradient, so
# `model.backward` skips the state and return heads.

# %%
model.train()
losses, grad_norms, lrs = [], [], []
t0 = time.perf_counter()
for step in range(STEPS):
    batch = training_batch(sampler, BATCH)
    out = model(**batch)
    actions, mask = (model.backend.asarray(batch[k], "float32")
                     for k in ("actions", "attention_mask"))
    loss, daction = masked_mse(out.action_preds, actions, mask)
    model.zero_grad()
    model.backward(action_preds=daction)
    grad_norm = clip_grad_norm_(model.parameters(), CLIP)
    lrs.append(sched.get_last_lr()[0])
    opt.step()
    sched.step()
    losses.append(float(to_numpy(loss)))
    grad_norms.append(float(to_numpy(grad_norm)))
    if (step + 1) % max(1, STEPS // 10) == 0:
        print(f"step {step + 1:5d}  loss {losses[-1]:.4f}  grad norm "
              f"{grad_norms[-1]:.3f}  lr {lrs[-1]:.1e}")
elapsed = time.perf_counter() - t0
print(f"{STEPS} steps in {elapsed:.1f} s ({STEPS / elapsed:.1f} steps/s)")
assert all(np.isfinite(losses)), "the loss diverged"

# %% [markdown]
# ## The loss curve
#
# What is a good loss? Predicting the dataset's mean action for every state is the best a model can do without
# looking at its input: its loss is the variance of the (normalized) actions. Anything below that line was
# learned from the states and returns. The full-replay data is noisy (many actions were random), so the loss
# cannot approach zero: the model learns the *average* action taken in each situation at each return.

# %%
all_actions = pre.normalize_actions(np.concatenate([e.actions for e in data]))
baseline = float(np.var(all_actions))
w = max(1, STEPS // 20)
smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
print(f"first {w} steps: mean loss {np.mean(losses[:w]):.4f}; last {w} steps: "
      f"{np.mean(losses[-w:]):.4f}; "
      f"constant-action baseline {baseline:.4f}")

fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(7, 6), sharex=True,
                               gridspec_kw={"height_ratios": [3, 1]})
ax0.plot(np.arange(1, STEPS + 1), losses, lw=0.8, alpha=0.4, label="loss (one batch)")
ax0.plot(np.arange(w, STEPS + 1), smooth, lw=2, label=f"moving average over {w} steps")
ax0.axhline(baseline, color="k", ls="--", lw=1, label="predict the mean action")
ax0.set_yscale("log")
ax0.set_ylabel("action MSE (normalized actions)")
ax0.set_title(f"{ENV} / full-replay: hidden {config.hidden_size}, {config.n_layer} "
              f"layers, batch {BATCH}")
ax0.legend()
ax1.plot(np.arange(1, STEPS + 1), lrs)
ax1.set_ylabel("learning rate")
ax1.set_xlabel("step")
show(fig, FIGURES / "09_loss.png")

if not SMOKE:  # at full size the model must have learned something from its inputs
    assert np.mean(losses[-w:]) < 0.85 * baseline, (np.mean(losses[-w:]), baseline)
    first, last = np.mean(losses[:w]), np.mean(losses[-w:])
    assert last < 0.85 * first, (first, last)

# %% [markdown]
# A lower loss says the model imitates the data; it does not yet say that asking for a high return *gets* one.
# That is the question of tutorial 10, which evaluates this very model: `save_pretrained` writes it (config.json
# and model.safetensors, the format transformers reads, tutorial 07) into `runs/09_training/` beside this file,
# with the preprocessing beside it, and tutorial 10 loads it from there instead of training again.

# %%
# a smoke model never passes for a real one
SAVED = HERE / "runs" / ("09_training-smoke" if SMOKE else "09_training")
model.save_pretrained(SAVED)
summary = {"preprocess": pre.to_dict(), "steps": STEPS, "K": K,
           "final_loss": float(np.mean(losses[-w:]))}
atomic_write_text(SAVED / "tutorial09.json", json.dumps(summary))
print("saved to", SAVED, sorted(p.name for p in SAVED.iterdir()))

# %% [markdown]
# ## The same step, from the library
#
# The loop body above is what minidt means by "a step" everywhere: `minidt.train.train_step(model, opt, sched,
# batch, clip)` is that body as one function (the trainer, `minidt.DataParallel` and the coursework's `train_step`
# all mean it). It returns the loss and the gradient norm as arrays on the model's device: reading a number from a
# GPU stalls it, so `minidt train` reads them once per logging window. One step of each from the same weights and
# the same batch must leave the same weights, bit for bit.

# %%
from minidt.train import train_step


def fresh() -> tuple:
    m = DecisionTransformerModel(config, dtype="float32", seed=1)
    o = AdamW(param_groups_no_decay(m.named_parameters(), weight_decay=1e-4), lr=LR)
    return m, o, LinearWarmup(o, WARMUP)


batch = training_batch(sampler, BATCH)
(m1, o1, s1), (m2, o2, s2) = fresh(), fresh()
out = m1(**batch)  # the loop body, once
actions, mask = (m1.backend.asarray(batch[k], "float32")
                 for k in ("actions", "attention_mask"))
loss1, daction = masked_mse(out.action_preds, actions, mask)
m1.zero_grad()
m1.backward(action_preds=daction)
clip_grad_norm_(m1.parameters(), CLIP)
o1.step()
s1.step()
loss2, _ = train_step(m2, o2, s2, batch, CLIP)  # the library's step
assert float(to_numpy(loss1)) == float(to_numpy(loss2))
assert all(np.array_equal(to_numpy(p.data), to_numpy(q.data))
           for p, q in zip(m1.parameters(), m2.parameters()))
print("train_step leaves the same weights as the loop body, bit for bit; loss",
      float(to_numpy(loss2)))

# %% [markdown]
# ## Exercises
#
# **1. Predict, then run: no warm-up.** Set `WARMUP = 1` (the full learning rate from the first step) and train
# again for the same number of steps. Will the final loss be higher, lower, or the same? Will the first steps'
# gradient norms look different? Write your guess down, then run the solution cell.
#
# **2. Predict, then run: forget `zero_grad`.** Gradients accumulate into `Parameter.grad` (PyTorch's semantics).
# Delete `model.zero_grad()` from the loop: will the gradient norm that `clip_grad_norm_` reports grow step after
# step?
#
# **3. Plant a bug: drop the 2.** In `masked_mse`'s gradient, forget the factor 2 of $d(x^2)/dx = 2x$. Which check
# above catches it, and what relative error will it print? (You can say the number before you run it.)
#
# **4. Derive before the reveal.** With clipping at $c = 0.25$ and Adam's update
# $\Delta\theta = -\text{lr}\,\hat m / (\sqrt{\hat v} + \epsilon)$, how much does clipping change the *first*
# AdamW step? (Hint: at step 1, $\hat m = g$ and $\hat v = g^2$.)
#
# ### Solutions
#
# Each solution is one cell, collapsed in the book; in the script, everything below this line is the solutions.

# %% tags=["hide-cell"]
# Solution 1: a short run without warm-up, against the same run with it (same seed, same
# batches).
def short_run(warmup: int, steps: int) -> tuple[list[float], list[float]]:
    m = DecisionTransformerModel(config, dtype="float32", seed=0).train()
    o = AdamW(param_groups_no_decay(m.named_parameters(), weight_decay=1e-4), lr=LR)
    sc = LinearWarmup(o, warmup)
    smp = SegmentSampler(data, K=K, max_ep_len=max_ep_len, seed=1)
    ls, gs = [], []
    for _ in range(steps):
        b = training_batch(smp, BATCH)
        actions, mask = (m.backend.asarray(b[k], "float32")
                         for k in ("actions", "attention_mask"))
        l, d = masked_mse(m(**b).action_preds, actions, mask)
        m.zero_grad()
        m.backward(action_preds=d)
        gs.append(float(to_numpy(clip_grad_norm_(m.parameters(), CLIP))))
        o.step()
        sc.step()
        ls.append(float(to_numpy(l)))
    return ls, gs


n = 20 if SMOKE else 100
for warmup in (WARMUP, 1):
    ls, gs = short_run(warmup, n)
    print(f"warm-up {warmup:3d}: mean loss over the last {n // 4} of {n} steps "
          f"{np.mean(ls[-n // 4:]):.4f}; "
          f"gradient norm over the first 5 steps {np.round(gs[:5], 2)}")
# On this small model both settle to about the same loss: warm-up matters most for deep
# models and large learning rates, where the first, badly scaled Adam steps can push the
# network somewhere it does not recover from.

# %% tags=["hide-cell"]
# Solution 2: no. clip_grad_norm_ rescales p.grad in place, so what is left in p.grad
# after a step has norm at most 0.25, and the next backward adds one batch's gradient g
# to it: the norm stays below 0.25 + |g|. Training goes on, quietly wrong: each step
# follows the current gradient plus a clipped echo of all the earlier ones.
m = DecisionTransformerModel(config, dtype="float32", seed=0).train()
o = AdamW(param_groups_no_decay(m.named_parameters(), weight_decay=1e-4), lr=LR)
norms = []
for _ in range(10):
    b = training_batch(sampler, BATCH)
    _, d = masked_mse(m(**b).action_preds, m.backend.asarray(b["actions"], "float32"),
                      m.backend.asarray(b["attention_mask"], "float32"))
    m.backward(action_preds=d)  # the bug: no m.zero_grad() first
    norms.append(float(to_numpy(clip_grad_norm_(m.parameters(), CLIP))))
    o.step()
print("gradient norm before clipping, steps 1-10, without zero_grad:",
      np.round(norms, 2))
assert all(np.isfinite(norms))

# %% tags=["hide-cell"]
# Solution 3: half the gradient, so the relative error is exactly 0.5: the
# finite-difference check of the loss section prints 5.0e-01 (max |half - full| / max
# |full|) where the correct gradient gave about 1e-9.
from minidt.gradcheck import rel_error  # max |a - b| / max |b|, tutorial 01

dpred_bug = dpred / 2  # what `diff * (1.0 / n)` would return
err_bug = rel_error(dpred_bug, num)
print("masked_mse gradient without the factor 2 against finite differences: relative "
      f"error {err_bug:.1e}")
assert abs(err_bug - 0.5) < 1e-6, err_bug

# %% [markdown]
# :::{dropdown} Solution 4
# At step 1, Adam's bias-corrected moments are $\hat m = g$ and $\hat v = g^2$, so the update is
# $-\text{lr}\; g / (|g| + \epsilon) \approx -\text{lr}\,\operatorname{sign}(g)$ entry by entry. Clipping
# multiplies $g$ by a positive factor $s$: $sg / (|sg| + \epsilon)$ is the same sign, so the first step is
# unchanged (up to $\epsilon$). Clipping changes later steps only through the *ratio* of the current gradient
# to the running averages: it caps the weight of one outlier batch in $m$ and $v$.
# :::

# %% [markdown]
# #### After you have done assignment 6
#
# `masked_mse` as minidt ships them: the reference solution of assignment 6 (`minidt assignment start training
# DIR`). Collapsed in the book: read it once your own passes `minidt grade`.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the code (after assignment 6)"}
print(inspect.getsource(masked_mse))
