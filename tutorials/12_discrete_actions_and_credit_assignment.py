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
# # 12 · Discrete actions and credit assignment
#
# *Full size: about 7 min on 2 shared CPU cores (measured at load average 2.5 to 5.7: 330 s of CPU, the training
# 311 s of it); `MINIDT_SMOKE=1`: seconds.*
#
# Half of gymnasium's classic-control tasks, the paper's Atari games and its Key-to-Door task have *discrete*
# actions: one of $A$ choices per step. The Decision Transformer handles them with three changes and nothing
# else: an action enters as a one-hot vector, `action_preds` are logits (one score per action), and the loss is
# the cross-entropy of those logits instead of a squared error. This tutorial
#
# 1. derives the cross-entropy's gradient (softmax minus one-hot, over the real steps) and why the row maximum is
#    subtracted, then checks it against finite differences and PyTorch;
# 2. shows that a one-hot vector through a Linear layer is an embedding lookup;
# 3. trains on Key-to-Door, the paper's test of credit assignment, and compares the Decision Transformer with
#    behaviour cloning, %BC and the random policy;
# 4. reads the trained model's attention on a successful episode: does it look back at the key (the paper's
#    Figure 5)?

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the set-up"}
import atexit
import inspect
import os
import shutil
import tempfile
import time

import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np

from minidt.plots import figure_dir, show

SMOKE = os.environ.get("MINIDT_SMOKE") == "1"
# figures/ beside this file, or $MINIDT_FIGURES
FIGURES = figure_dir(globals().get("__file__"))
# tiny throwaway datasets: keep them out of the user's cache (~/.cache/minidt)
if SMOKE:
    os.environ["MINIDT_CACHE"] = tempfile.mkdtemp(prefix="minidt-cache-")
    atexit.register(shutil.rmtree, os.environ["MINIDT_CACHE"], ignore_errors=True)

import minidt
from minidt import DecisionTransformerConfig, DecisionTransformerModel
from minidt.backend import to_numpy
from minidt.data import SegmentSampler
from minidt.gradcheck import numerical_grad, rel_error  # tutorial 01 derives them
from minidt.keytodoor import ENV_ID, PHASES, SIZE, random_success_rate
from minidt.layers.embedding import embedding_backward, embedding_forward
from minidt.losses import cross_entropy_backward, cross_entropy_forward
from minidt.optim import AdamW, LinearWarmup, param_groups_no_decay
from minidt.parallel import DataParallel
from minidt.report import evaluate_targets
from minidt.settings import TrainSettings
from minidt.train import build_model, load_data, train_step, training_batch

try:
    import torch
except ImportError:
    torch = None
    print("torch not installed: skipping the PyTorch comparisons")

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The cross-entropy and its gradient
#
# At a real step the model reads its state token and outputs logits $z \in \mathbb{R}^A$; the action taken was
# $a$, written as the one-hot vector $y$ ($y_a = 1$, the rest 0). The probabilities are the softmax of the logits,
# and the step's loss is minus the log-probability of the action taken:
#
# $$p_j = \frac{e^{z_j}}{\sum_k e^{z_k}}, \qquad
#   \ell = -\sum_j y_j \log p_j = -\log p_a .$$
#
# Over a batch of $B$ segments of $K$ steps with mask $m_{bt} \in \{0, 1\}$ (0 at left padding), the loss is the
# mean over the $N = \sum_{bt} m_{bt}$ real steps, as `torch.nn.functional.cross_entropy` takes it over the rows it
# is given:
#
# $$L = \frac{1}{N} \sum_{b,t} m_{bt}\, \ell(z_{bt}, y_{bt}).$$
#
# **The gradient.** Write the log-probability as $\log p_j = z_j - \log \sum_k e^{z_k}$. The second term's
# derivative is the softmax itself, $\partial \log \sum_k e^{z_k} / \partial z_c = p_c$, so
#
# $$\frac{\partial \log p_j}{\partial z_c} = \delta_{jc} - p_c
#   \quad\Rightarrow\quad
#   \frac{\partial \ell}{\partial z_c} = -\sum_j y_j (\delta_{jc} - p_c)
#   = p_c \sum_j y_j - y_c .$$
#
# A one-hot (or any probability vector) has $\sum_j y_j = 1$, which leaves
#
# $$\frac{\partial L}{\partial z_{bt}} = \frac{m_{bt}}{N}\,\big(p_{bt} - y_{bt}\big):$$
#
# softmax minus one-hot, divided by the number of real steps, and exactly zero at padding. Each row of it sums to
# zero (a softmax sums to 1, so does $y$): the loss never pushes all of a row's logits up or down together.
#
# **The row maximum.** $e^{z}$ overflows for $z > 709.8$ in float64 and for $z > 88.7$ in float32, and a row of
# very negative logits underflows to a sum of 0, whose log is $-\infty$. With $m = \max_k z_k$,
#
# $$\log \sum_k e^{z_k} = m + \log \sum_k e^{z_k - m}:$$
#
# every exponent is now at most 0, so every term is at most 1, and the largest term is exactly $e^0 = 1$, so the
# sum lies in $[1, A]$ and its log in $[0, \log A]$: finite whatever the logits. The probabilities do not change
# ($e^{-m}$ cancels in the softmax), so neither does the gradient. Padded rows hold whatever the model computed
# there, possibly NaN: they are replaced by zeros *before* the exponential, with `where` (a NaN times a mask of 0
# is still NaN).
#
# `minidt.losses.cross_entropy_forward(logits, target, mask)` returns the loss and a cache (the log-softmax, the
# masked targets, the mask, $N$); `cross_entropy_backward(cache)` returns $\partial L / \partial z$. Writing them is
# assignment 7 (`minidt assignment start cross_entropy DIR`); minidt's code is after the exercises. Here they are
# checked, on a batch whose padded rows hold NaN:

# %%
B, K, A = 3, 5, 4
logits = 3.0 * rng.standard_normal((B, K, A))
ids = rng.integers(A, size=(B, K))  # the actions taken
target = np.eye(A)[ids]  # B,K,A  one-hot rows
mask = np.ones((B, K))
mask[0, :2] = mask[2, :1] = 0.0  # left padding: rows 0 and 2 start later
logits[mask == 0] = np.nan  # a padded row is garbage: it must not matter
loss, cache = cross_entropy_forward(logits, target, mask)
dlogits = cross_entropy_backward(cache)
num = numerical_grad(lambda: float(cross_entropy_forward(logits, target, mask)[0]),
                     logits)  # central differences in float64; 0 where the loss ignores
err = rel_error(dlogits, num)
print(f"loss {float(loss):.6f} over N = {int(mask.sum())} real steps")
print(f"dlogits vs central finite differences: relative error {err:.1e}")
print("dlogits at the padded steps:", np.unique(dlogits[mask == 0]))
print("each real row of dlogits sums to", np.abs(dlogits.sum(-1)).max().round(17))
assert err < 1e-8, err
assert np.all(dlogits[mask == 0] == 0.0)

# %% [markdown]
# PyTorch's `cross_entropy` takes the real rows and the action ids. Its loss and its gradient (through autograd)
# must be minidt's:

# %%
if torch is not None:
    real = mask > 0
    zt = torch.tensor(logits[real], requires_grad=True)  # N,A  the real rows only
    lt = torch.nn.functional.cross_entropy(zt, torch.tensor(ids[real]))
    lt.backward()
    err_loss = abs(lt.item() - float(loss)) / abs(lt.item())
    err_grad = rel_error(dlogits[real], zt.grad.numpy())
    print(f"against torch: loss {err_loss:.1e}, gradient {err_grad:.1e}")
    assert err_loss < 1e-12 and err_grad < 1e-12, (err_loss, err_grad)

# %% [markdown]
# And the row maximum at work: the same logits with each row moved up or down by 1000 give the same loss and
# gradient, where the textbook formula, $\log \sum_k e^{z_k}$ computed as written, gives NaN:

# %%
def naive_loss(z: np.ndarray, y: np.ndarray, m: np.ndarray) -> float:
    """The textbook formula, no max subtracted (a cautionary version, not minidt's)."""
    real = m[..., None] > 0
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        logp = z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))
        return float(-np.sum(np.where(real, y * logp, 0.0)) / m.sum())


for shift in (0.0, 1000.0):
    z = logits + shift * np.sign(rng.standard_normal((B, K, 1)))  # each row up or down
    stable, c = cross_entropy_forward(z, target, mask)
    same = rel_error(cross_entropy_backward(c), dlogits)
    print(f"rows moved by +-{shift:4.0f}: minidt {float(stable):.6f} (gradient off by "
          f"{same:.0e}), naive {naive_loss(z, target, mask)}")
    assert abs(float(stable) - float(loss)) < 1e-12 * abs(float(loss)) and same < 1e-12

# %% [markdown]
# ## 2. A one-hot vector through a Linear layer is an embedding
#
# A discrete action enters the model through `embed_action`, the same Linear layer that embeds a continuous
# action. Its weight $W$ has PyTorch's `nn.Linear` layout $(C, A)$, and on the one-hot vector $e_a$ of action
# $a$ it gives
#
# $$W e_a + b = W_{:,a} + b :$$
#
# column $a$ of the weight plus the bias, one row of the table $E = W^\top + b$ $(A, C)$. That is an embedding
# lookup, what the original Atari code (kzl/decision-transformer) does with `nn.Embedding(act_dim, C)`. The two
# layers are the same function with different parameters: the Linear's bias is shared by every action, the
# embedding's rows are free, so $E$ has $A C$ numbers and $(W, b)$ has $A C + C$. The gradients agree too:
# $\partial L / \partial W = \sum_\text{tokens} \delta\, e_a^\top$ adds each token's output gradient $\delta$ into
# the column of its action, the embedding's scatter-add, and the bias collects the sum over all tokens, which is
# the sum of the embedding gradient's rows. Checked on a small discrete model:

# %%
config = DecisionTransformerConfig(state_dim=7, act_dim=A, hidden_size=8, n_layer=1,
                                   n_head=1, max_ep_len=40, discrete_actions=True)
model = DecisionTransformerModel(config, dtype="float64", seed=0)
layer = model.embed_action
# a nonzero bias (it starts at 0)
layer.bias.data = rng.standard_normal(layer.bias.shape)
W, b = to_numpy(layer.weight.data), to_numpy(layer.bias.data)  # (C, A), (C,)
out = layer(np.eye(A)[ids])  # B,K,C  the Linear on one-hot rows
E = W.T + b  # A,C  the embedding table
looked_up, lookup_cache = embedding_forward(ids, E)  # B,K,C
print("Linear on one-hot vs table lookup: max difference",
      np.abs(to_numpy(out) - looked_up).max())
assert np.allclose(to_numpy(out), looked_up, rtol=0, atol=1e-15)

dout = rng.standard_normal(out.shape)
layer.zero_grad()
layer.backward(dout)  # dW (C, A) and db (C,) into .grad
dE = embedding_backward(dout, lookup_cache)  # A,C
err_w = rel_error(to_numpy(layer.weight.grad).T, dE)
err_b = rel_error(to_numpy(layer.bias.grad), dE.sum(axis=0))
print(f"dW^T vs the embedding's gradient {err_w:.1e}; "
      f"db vs the sum of its rows {err_b:.1e}")
assert err_w < 1e-12 and err_b < 1e-12
if torch is not None:
    # what the Atari code uses
    table = torch.nn.Embedding.from_pretrained(torch.tensor(E))
    err_t = np.abs(table(torch.tensor(ids)).numpy() - to_numpy(out)).max()
    print(f"against torch.nn.Embedding: max difference {err_t:.1e}")
    assert err_t < 1e-15

# %% [markdown]
# ## 3. Key-to-Door
#
# The paper's credit-assignment task (section 5.3, after Mesnard et al. 2020), `minidt/KeyToDoor-v0`. Three rooms
# come one after another, each a 5 x 5 grid for a fixed number of steps: 10 steps in a room with a key, which the
# agent picks up by stepping on it; 20 steps in an empty room; 10 steps in a room with a door. Reaching the door
# ends the episode, with reward 1 if the key was picked up and 0 otherwise. The agent starts each room on a random
# cell; it moves up, down, left or right. The observation is the room, the agent's cell, the key's cell while it
# lies there and the door's in the last room. **Nothing says whether the key is held.** At the door, only the
# episode's own past, its context, can tell; and the one reward comes 20 steps or more after the action that
# earned it. Three rooms, drawn by the environment itself:

# %%
env = gym.make(ENV_ID, render_mode="rgb_array")
obs, _ = env.reset(seed=3)
frames = [env.render()]
for room in range(2):  # walk (randomly) through the first two rooms
    for _ in range(PHASES[room]):
        obs, *_ = env.step(int(rng.integers(4)))
    frames.append(env.render())
fig, axes = plt.subplots(1, 3, figsize=(8, 3))
titles = [f"room 1: the key ({PHASES[0]} steps)", f"room 2: empty ({PHASES[1]} steps)",
          f"room 3: the door ({PHASES[2]} steps)"]
for ax, frame, title in zip(axes, frames, titles):
    ax.imshow(frame)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
fig.suptitle("Key-to-Door: the agent blue, the key yellow, the door brown", fontsize=10)
show(fig, FIGURES / "12_rooms.png")

# %% [markdown]
# ### The random policy, exactly
#
# A uniform random walk succeeds if it steps onto the key within 10 moves *and* onto the door within 10 moves of
# the last room (the empty room changes nothing). Let $H_n[s, g]$ be the probability that the walk from cell $s$
# reaches cell $g$ within $n$ moves, and $P$ the one-move transition matrix (a move into a wall stays put).
# Conditioning on the first move,
#
# $$H_n[s, g] = \sum_{s'} P[s, s'] \big(\mathbb{1}[s' = g] + \mathbb{1}[s' \ne g]\, H_{n-1}[s', g]\big),
#   \qquad H_0 = 0 .$$
#
# Averaged over the uniform start $s \ne g$ and target $g$ in each room, and multiplied for the two independent
# rooms, that is `minidt.keytodoor.random_success_rate()`. A simulation of the same policy must agree with it
# within its standard error:

# %%
exact = random_success_rate()
RANDOM_EPISODES = 200 if SMOKE else 2000
env = gym.make(ENV_ID)
wins = 0
for i in range(RANDOM_EPISODES):
    env.reset(seed=20_000 + i)
    done = False
    while not done:
        _, reward, terminated, truncated, _ = env.step(int(rng.integers(4)))
        done = terminated or truncated
    wins += reward
simulated = wins / RANDOM_EPISODES
se = np.sqrt(exact * (1 - exact) / RANDOM_EPISODES)
print(f"random policy: exact {100 * exact:.2f} %, "
      f"simulated {100 * simulated:.2f} % over "
      f"{RANDOM_EPISODES} episodes (standard error {100 * se:.2f} points)")
print("the paper's version of the task: 3.1 %")
assert abs(simulated - exact) < 4 * se + 1e-9, (simulated, exact)

# %% [markdown]
# ### The data, and three learners that differ in one thing each
#
# The data are random-policy episodes, the paper's smaller dataset of 1,000 (`minidt train --env
# minidt/KeyToDoor-v0 --dataset-episodes 1000`). About 4 % of them succeed. Three learners, all the same model
# (the quick preset's: hidden size 64, 2 layers, 1 head, dropout 0.1; batch 64, learning rate $10^{-3}$ after a
# 200-step warm-up) with the whole episode as its context ($K = 40$, as in the paper):
#
# - **DT**, the Decision Transformer: each step's return-to-go is an input, 1 before a successful episode's door
#   and 0 in a failed one. Asked for a return of 1, it should act as the successful episodes did.
# - **BC**, behaviour cloning: the *same model* with its return input zeroed, in every training batch and every
#   rollout (`--algo bc`). DT against BC therefore changes exactly one thing, whether the model is told the return.
#   BC imitates all the data, which is a random policy.
# - **%BC**: BC on the best episodes only (`--algo bc --top-percent 10`). Key-to-Door's returns are 0 or 1, so
#   its "best 10 %" are exactly the successful episodes, the paper's %BC here. It asks whether DT does more than
#   imitate the data that went well.
#
# The budget was fixed before the first full run, to keep this tutorial a few minutes long: 800 steps for DT and
# BC, 400 for %BC (its 38 episodes are seen many times over in 400 steps of 64). A step of 64 episodes costs
# about 0.16 s of CPU (the full run below: 126 s for DT's 800 steps, evaluations included), spread over two cores
# by `minidt.DataParallel`. That is far shorter than the paper's training, and DT is the one it hurts: in its
# batches only about 3 % of the real steps carry a return-to-go of 1 (printed below), where %BC sees nothing but
# successful episodes. Every 200 steps, each learner is evaluated on the same 100 seeded
# episodes (target return 1 for DT; BC and %BC have no target).

# %%
ENV = ENV_ID
EPISODES = 150 if SMOKE else 1000
STEPS = {"DT": 4, "BC": 4, "%BC": 2} if SMOKE else {"DT": 800, "BC": 800, "%BC": 400}
EVAL_EVERY = 2 if SMOKE else 200
EVAL_EPISODES = 4 if SMOKE else 100
LEARNERS = {"DT": dict(algo="dt"), "BC": dict(algo="bc"),
            "%BC": dict(algo="bc", top_percent=10.0)}


def settings(name: str) -> TrainSettings:
    """The quick preset and Key-to-Door's own defaults (K 40), this tutorial's sizes."""
    return TrainSettings.from_preset("quick", env=ENV, dataset_episodes=EPISODES,
                                     steps=STEPS[name], seed=0, **LEARNERS[name])


data, pre, max_ep_len = load_data(settings("DT"), progress=not SMOKE)
print(data)
print(f"{int(data.returns.sum())} of {len(data)} episodes succeed "
      f"({100 * data.returns.mean():.1f} %); K = {settings('DT').K}")
for name in LEARNERS:  # what each learner's batches hold
    s = settings(name)
    d, p, _ = load_data(s, progress=False)
    sampler = SegmentSampler(d, K=s.K, max_ep_len=max_ep_len, seed=0)
    batch = training_batch(sampler, p, 256, discrete=True)
    rtg = batch["returns_to_go"][batch["attention_mask"] > 0]
    print(f"{name:>3}: {len(d):4d} episodes; returns-to-go in a batch: "
          f"{np.unique(rtg)}, {100 * rtg.mean():.1f} % of the real steps are 1")

# %% [markdown]
# The loop is tutorial 9's (`minidt.train.train_step`: forward, loss, backward, clipping, AdamW), with the
# cross-entropy in place of the squared error (a discrete model's `train_step` picks it), around
# `minidt.DataParallel` (tutorial 9's loop on one core, here split over two). Evaluation is
# `minidt.report.evaluate_targets`, the rollouts `minidt train` and `minidt evaluate` run (argmax actions).

# %%
def fit(name: str) -> tuple[DataParallel, object, list[float], list[tuple[int, float]]]:
    """Train one learner; -> (model, its preprocessing, the loss of every step,
    [(step, success rate at target 1)])."""
    s = settings(name)
    d, p, _ = load_data(s, progress=False)
    sampler = SegmentSampler(d, K=s.K, max_ep_len=max_ep_len, seed=s.seed)
    model = build_model(s, d.state_dim, d.act_dim, max_ep_len, discrete=True)
    opt = AdamW(param_groups_no_decay(model.named_parameters(), s.weight_decay),
                lr=s.lr, weight_decay=s.weight_decay)
    sched = LinearWarmup(opt, s.warmup_steps)
    net = DataParallel(model)  # one replica per usable core
    losses, curve = [], []
    for step in range(1, s.steps + 1):
        net.train()
        batch = training_batch(sampler, p, s.batch_size, discrete=True)
        loss, _ = train_step(net, opt, sched, batch, s.grad_clip)
        losses.append(float(to_numpy(loss)))
        if step % EVAL_EVERY == 0 or step == s.steps:
            ev = evaluate_targets(net, ENV, [1.0], EVAL_EPISODES, p, s.K)[0]
            curve.append((step, ev["success_rate"]))
    return net, p, losses, curve


nets, pres, losses, curves = {}, {}, {}, {}
for name in LEARNERS:
    t0, c0 = time.perf_counter(), time.process_time()
    nets[name], pres[name], losses[name], curves[name] = fit(name)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"{name:>3}: {STEPS[name]} steps in {wall:.0f} s ({cpu:.0f} s of CPU); "
          "success at target 1 every "
          f"{EVAL_EVERY} steps: {[f'{100 * r:.0f} %' for _, r in curves[name]]}")

# %% [markdown]
# ### What they learned
#
# Two pictures. The loss first: on random actions no model can beat the entropy of a uniform choice,
# $\log 4 \approx 1.386$, unless something tells it which episodes these are. BC has nothing of the kind. DT has
# the return. %BC's actions are those of the lucky episodes only, which did walk towards the key and the door
# more often than chance. Then the success rate at target 1 as training goes on, against the random policy's exact
# rate.

# %%
w = max(1, min(STEPS.values()) // 10)
colors = {"DT": "tab:blue", "BC": "tab:orange", "%BC": "tab:green"}
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
for name, ls in losses.items():
    smooth = np.convolve(ls, np.ones(w) / w, mode="valid")
    ax0.plot(np.arange(w, len(ls) + 1), smooth, color=colors[name], label=name)
    steps, rates = zip(*curves[name])
    ax1.plot(steps, 100 * np.array(rates), "o-", color=colors[name], label=name)
ax0.axhline(np.log(4), color="k", ls="--", lw=1, label="log 4 (a uniform guess)")
ax0.set_xlabel("step")
ax0.set_ylabel(f"cross-entropy (moving average over {w})")
ax0.legend()
ax1.axhline(100 * exact, color="k", ls="--", lw=1, label="random policy (exact)")
ax1.set_xlabel("step")
ax1.set_ylabel(f"success rate at target 1, % ({EVAL_EPISODES} episodes)")
ax1.legend()
fig.suptitle(f"Key-to-Door, {EPISODES} random episodes: one seed", fontsize=10)
show(fig, FIGURES / "12_learning.png")

# %% [markdown]
# The table: each learner's last evaluation, with its standard error $\sqrt{p(1-p)/n}$ over the $n$ evaluation
# episodes (the spread of *one* training run's evaluation, not of training seeds), beside the paper's numbers for
# the same dataset size. DT is also asked for returns of 0 and 0.5: a return-conditioned policy should succeed
# less when asked for less.

# %%
# 1,000 episodes, the paper's Table 5
PAPER = {"DT": 71.8, "BC": 1.4, "%BC": 69.9, "random": 3.1}
final = {name: curve[-1][1] for name, curve in curves.items()}
print(f"{'policy':>8}  {'steps':>5}  {'success':>16}  {'paper':>7}")
for name, p in final.items():
    se = np.sqrt(p * (1 - p) / EVAL_EPISODES)
    print(f"{name:>8}  {STEPS[name]:5d}  {100 * p:6.1f} % +- {100 * se:4.1f}  "
          f"{PAPER[name]:5.1f} %")
print(f"{'random':>8}  {'':>5}  {100 * exact:6.1f} % (exact)  {PAPER['random']:5.1f} %")
asked = evaluate_targets(nets["DT"], ENV, [0.0, 0.5, 1.0], EVAL_EPISODES, pres["DT"],
                         40)
print("DT asked for return", ", ".join(
    f"{r['target_return']:g}: {100 * r['success_rate']:.0f} %" for r in asked))

# %% [markdown]
# What the full-size run printed (one training seed; $\pm$ is the standard error over the 100 evaluation
# episodes):
#
# | policy | steps | success at target 1 | the paper (1,000 episodes) |
# |---|---|---|---|
# | DT | 800 | 4.0 % $\pm$ 2.0 | 71.8 % |
# | BC | 800 | 3.0 % $\pm$ 1.7 | 1.4 % |
# | %BC | 400 | 84.0 % $\pm$ 3.7 | 69.9 % |
# | random | | 4.41 % (exact) | 3.1 % |
#
# **%BC learns the task at once**: 73 % after 200 steps, 84 % after 400, above the paper's 69.9 %, and its loss
# falls from $\log 4$ to about 0.7 (the actions of the lucky episodes head for the key and the door). **BC stays at
# chance**, as it must: it imitates a random policy, its loss stays at $\log 4$, and its 3 % is the random
# policy's 4.4 % within two standard errors. **DT, in this budget, is no better than BC**: its success went 0, 1, 8
# and 4 % at steps 200 to 800, its loss curve lies under BC's at $\log 4$, and asked for returns 0, 0.5 and 1 it
# succeeded in 2, 9 and 4 % of the episodes: no sign yet that the return it is given changes what it does. This is
# far from the paper's 71.8 %, and it is the budget the paragraph above warned about, not a verdict on the method:
# DT has to learn from the 3 % of its rows that carry a return of 1 *which* of its inputs tells a successful
# episode from a failed one, where %BC is handed only successful episodes. minidt's feasibility prototype for this
# task (the same model and data size) measured DT at 16 % after 1,500 steps and 36 % after 4,500, still rising;
# `minidt train --env minidt/KeyToDoor-v0` trains 10,000 steps under the quick preset for that reason (the book's
# page on discrete actions, docs/discrete.md, gives its settings; `--dataset-episodes 1000` selects this dataset,
# `--algo bc` and `--top-percent 10` the other learners, `--seed` the training seed). `minidt study key-to-door`
# trains DT, BC and %BC on both dataset sizes over three seeds; tutorial 13 shows its table and how success grows
# with the successful episodes each learner has seen.

# %% [markdown]
# ## 4. Does the model look back at the key?
#
# The paper's Figure 5 shows where a trained Decision Transformer's attention goes on Key-to-Door: at the door, it
# looks back at the moment the key was picked up, the one event that decides the reward. The model already reports
# its attention probabilities (`output_attentions=True`, as in transformers): per layer an array (B, heads, 3K, 3K)
# whose row $i$ is how much token $i$ reads from each token $j$. The tokens of step $t$ are $3t$ (return),
# $3t + 1$ (state) and $3t + 2$ (action). An action is predicted at its state token, so the rows that matter are
# the state tokens; summing each row over a step's three tokens gives how much the prediction at step $t$ reads
# from step $t'$.
#
# The episodes are the dataset's successful ones, whole, each in one window of 40 steps (left-padded when the
# door came early). The key is picked up by the action at step $t_k$: the state $s_{t_k+1}$ is the first without
# the key in it.

# %%
wins = np.flatnonzero(data.returns > 0)
sampler = SegmentSampler(data, K=40, max_ep_len=max_ep_len)
# whole episodes, left-padded; returns-to-go as in training: 1 until the door
window = sampler.gather(wins, np.zeros(len(wins), np.int64))
dt = nets["DT"].module.eval()
with minidt.no_grad():
    att = [to_numpy(a) for a in dt(**window, output_attentions=True).attentions]
att = [a[:, 0] for a in att]  # one head: (episodes, 3K, 3K) per layer


def pickup_step(episode) -> int:
    """The step whose action picked the key up."""
    obs = episode.observations
    # room 1, the key not in view
    gone = np.flatnonzero((obs[:, 0] == 0) & (obs[:, 3] < 0))
    # none: the key was taken by the room's last move, and the next state is room 2's
    return int(gone[0]) - 1 if len(gone) else PHASES[0] - 1


def step_attention(probs: np.ndarray) -> np.ndarray:
    """(3K, 3K) token attention -> (K, K): from each state token to each step's
    three tokens."""
    return probs[1::3].reshape(40, 40, 3).sum(axis=-1)


first = data[int(wins[0])]
pad = 40 - len(first)  # the window's left padding
t_key = pickup_step(first)
door_room = PHASES[0] + PHASES[1]  # the first step of the last room
print(f"episode {wins[0]}: {len(first)} steps, key picked up at step {t_key}, "
      f"the door room from step {door_room}")

fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
for layer, ax in enumerate(axes):
    S = step_attention(att[layer][0])[pad:, pad:]  # the real steps only
    im = ax.imshow(S, cmap="viridis", vmin=0, vmax=min(1.0, S.max()))
    ax.axvline(t_key, color="tab:red", lw=1.5, ls="--",
               label=f"key picked up (step {t_key})")
    ax.axhline(door_room - 0.5, color="w", lw=1, ls=":")
    ax.axvline(PHASES[0] - 0.5, color="w", lw=1, ls=":")
    ax.set_xlabel("attended step t'")
    ax.set_ylabel("state token of step t (where a_t is predicted)")
    ax.set_title(f"layer {layer + 1}")
    ax.legend(loc="upper right", fontsize=8)
fig.colorbar(im, ax=axes, shrink=0.8, label="attention (sum over R, s, a of step t')")
fig.suptitle("DT's attention on a successful Key-to-Door episode (dotted: the rooms)",
             fontsize=10)
show(fig, FIGURES / "12_attention.png")

# %% [markdown]
# One episode can mislead. Over every successful episode, the state tokens of the door room (where the action that
# earns the reward is chosen) put how much of their attention on the two steps around the pickup ($t_k$ and
# $t_k + 1$, six tokens), against what attending uniformly to every token they can see would put there?

# %%
def pickup_share(att_layer: np.ndarray) -> tuple[float, float]:
    """Mean over the successful episodes and their door-room state tokens: the
    attention on steps t_k and t_k + 1, and what uniform attention over the visible
    steps would give."""
    got, uniform = [], []
    for i, e in enumerate(wins):
        episode = data[int(e)]
        pad, t_k = 40 - len(episode), pickup_step(episode)
        S = step_attention(att_layer[i])[pad:, pad:]
        for t in range(door_room, len(episode)):
            got.append(S[t, t_k] + S[t, t_k + 1])
            uniform.append(6 / (3 * t + 2))  # 6 of the 3t + 2 tokens it can see
    return float(np.mean(got)), float(np.mean(uniform))


shares = [pickup_share(a) for a in att]
for layer, (got, uniform) in enumerate(shares):
    print(f"layer {layer + 1}: door-room state tokens put {100 * got:.1f} % of their "
          f"attention on the pickup steps; uniform attention: {100 * uniform:.1f} % "
          f"({got / uniform:.1f} x), over {len(wins)} successful episodes")

# %% [markdown]
# What the full-size run showed: after its 800 steps, DT does **not** look back at the key. Over the 38
# successful episodes, the state tokens of the door room put 5.0 % (layer 1) and 4.1 % (layer 2) of their
# attention on the two pickup steps, 0.8 and 0.7 times what uniform attention would (6.0 %). In the episode drawn
# above (episode 26, 38 steps, key picked up at step 7), layer 2's brightest cells are in the column of step 13,
# read from the empty room's rows, not in step 7's. That agrees with the table: a model that acts at chance has no
# reason to read the one event that decides the reward. The paper's Figure 5 is of a DT that solves the task; the
# measurement above is what to run on a model trained with the full budget (`minidt train` saves it in its run
# directory, `DecisionTransformerModel.from_pretrained(run_dir)` loads it) to see whether its attention moves to
# the pickup as its success rises.
#
# ## Exercises
#
# **1. Predict, then run: float32.** The model trains in float32. Without the max subtraction, from which logit
# value on does the loss become inf or NaN? Predict the number, then run the solution cell.
#
# **2. Plant a bug: an unmasked mean.** Average the step losses over all $B K$ slots instead of the $N$ real
# steps (and forget the mask). Which of section 1's checks catches it, and would it be caught if no row were
# padded?
#
# **3. Derive before the reveal.** Show that every entry of $\partial L / \partial z$ lies strictly between
# $-1/N$ and $1/N$, and that a step's gradient is largest when the model is confidently wrong. What does that say
# about the cross-entropy next to a squared error on the probabilities?
#
# **4. Predict, then run: BC's attention.** BC is the same model without the return input. Does it look back at
# the key more or less than DT does? Run section 4's measurement on BC's model.
#
# ### Solutions
#
# Each solution is one cell, collapsed in the book; in the script, everything below this line is the solutions.

# %% tags=["hide-cell"]
# Solution 1: exp overflows float32 above log(3.4028e38) = 88.72.
print("largest float32:", np.finfo(np.float32).max, "-> log:",
      np.log(np.finfo(np.float32).max))
for top in (88.0, 89.0):
    z32 = np.array([[[top, 0.0, -1.0, 2.0]]], np.float32)
    y32 = np.eye(4, dtype=np.float32)[[[2]]]
    m32 = np.ones((1, 1), np.float32)
    print(f"logit {top}: naive {naive_loss(z32, y32, m32)}, minidt "
          f"{float(cross_entropy_forward(z32, y32, m32)[0]):.4f}")
# A trained float32 model rarely emits logits near 89, but nothing forbids it; with the
# maximum subtracted, the loss is finite for every finite logit.

# %% tags=["hide-cell"]
# Solution 2: an unmasked mean (the padded rows' NaN replaced by zeros so that the bug
# shows as a wrong number rather than NaN).
def unmasked_loss(z: np.ndarray, y: np.ndarray) -> float:
    z = np.nan_to_num(z)
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    return float(-np.sum(y * logp) / (z.shape[0] * z.shape[1]))


print(f"masked {float(loss):.6f}, unmasked {unmasked_loss(logits, target):.6f}")
# The torch comparison catches it (torch sees the real rows only), and so does padding
# invariance: put other garbage in the padded rows and the unmasked loss moves. On a
# batch with no padding the two agree exactly, which is why tests draw left-padded
# batches (the grader of assignment 7 pads a row of every input).
logits2 = logits.copy()
logits2[mask == 0] = 5.0 * rng.standard_normal(logits2[mask == 0].shape)
print(f"other garbage at padding: masked "
      f"{float(cross_entropy_forward(logits2, target, mask)[0]):.6f}, unmasked "
      f"{unmasked_loss(logits2, target):.6f}")
z_full = rng.standard_normal((B, K, A))
masked_full = float(cross_entropy_forward(z_full, target, np.ones((B, K)))[0])
print(f"no padding: masked {masked_full:.6f}, "
      f"unmasked {unmasked_loss(z_full, target):.6f}")

# %% [markdown]
# :::{dropdown} Solution 3
# Entry $c$ of a real row is $(p_c - y_c)/N$ with $0 < p_c < 1$ (a softmax of finite logits is never exactly 0
# or 1). For $c \ne a$: $y_c = 0$, so it is $p_c / N \in (0, 1/N)$. For the action taken: $(p_a - 1)/N \in (-1/N, 0)$.
# Its size $(1 - p_a)/N$ is largest, close to $1/N$, when $p_a \to 0$: the model gave the action taken almost no
# probability, confidently wrong. A squared error on the probabilities, $\sum_c (p_c - y_c)^2$, has the
# gradient $2 J^\top (p - y)$ through the softmax's Jacobian $J = \operatorname{diag}(p) - p p^\top$, which
# vanishes as the softmax saturates, $p_a \to 0$ included: exactly where a confidently wrong model needs a push,
# it gets none. The cross-entropy's $\log$ cancels the softmax's exponential, and the push stays.
# :::

# %% tags=["hide-cell"]
# Solution 4: the same measurement on BC's model (its return input zeroed, as it was
# trained).
bc = nets["BC"].module.eval()
bc_window = dict(window, returns_to_go=np.zeros_like(window["returns_to_go"]))
with minidt.no_grad():
    bc_out = bc(**bc_window, output_attentions=True)
    bc_att = [to_numpy(a)[:, 0] for a in bc_out.attentions]
for layer, (got, uniform) in enumerate(pickup_share(a) for a in bc_att):
    print(f"BC layer {layer + 1}: {100 * got:.1f} % on the pickup steps "
          f"(uniform {100 * uniform:.1f} %, {got / uniform:.1f} x)")
# BC imitates a random policy: nothing it predicts depends on the key, so nothing
# rewards looking back at the pickup. The full-size run: BC 0.7 and 1.0 x uniform
# (layers 1 and 2), DT 0.8 and 0.7 x: after 800 steps, neither looks back at the key.

# %% [markdown]
# #### After you have done assignment 7
#
# `cross_entropy_forward` and `cross_entropy_backward` as minidt ships them: the reference solution of assignment 7
# (`minidt assignment start cross_entropy DIR`). Collapsed in the book: read it once your own passes `minidt grade`.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the code (after assignment 7)"}
print(inspect.getsource(cross_entropy_forward))
print(inspect.getsource(cross_entropy_backward))
