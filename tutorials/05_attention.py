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
# # 05 · Causal self-attention: masks, softmax backward, heads
#
# *Full size: about 12 s on 2 idle CPU cores; `MINIDT_SMOKE=1`: seconds.*
#
# Attention is the only layer in which tokens talk to each other. For one head, with queries, keys and values
# $Q, K, V \in \mathbb{R}^{T\times D}$ computed from the tokens,
#
# $$S = \frac{QK^\top}{\sqrt D} + \text{bias}, \qquad P = \operatorname{softmax}_\text{rows}(S), \qquad O = PV.$$
#
# Row $i$ of $P$ says how much token $i$ reads from each token $j$. The additive `bias` encodes *who may read
# whom*: causality (no peeking at the future, which a Decision Transformer needs to predict an action before it is
# taken) and padding (batches of segments of different lengths). This tutorial derives the backward pass, gets the
# masks right (including the row that is *all* padding), and splits the work into heads.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the set-up"}
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np

import minidt
from minidt.backend import Generator, get_backend, to_numpy
from minidt.gradcheck import numerical_grad, rel_error  # tutorial 01 derives them
from minidt.layers.attention import (CausalSelfAttention, attention_backward,
                                     attention_bias, attention_forward, merge_heads,
                                     softmax_backward, softmax_forward, split_heads)
from minidt.plots import figure_dir, show

SMOKE = os.environ.get("MINIDT_SMOKE") == "1"
# figures/ beside this file, or $MINIDT_FIGURES
FIGURES = figure_dir(globals().get("__file__"))
rng = np.random.default_rng(0)


try:
    import torch
except ImportError:
    torch = None
    print("torch not installed: skipping the PyTorch comparison")

# %% [markdown]
# ## 1. Softmax, forward and backward
#
# $y_i = e^{x_i} / \sum_k e^{x_k}$. Subtracting the row maximum first changes nothing mathematically (it cancels)
# and keeps every `exp` at most 1, so nothing overflows. The Jacobian is
#
# $$\frac{\partial y_j}{\partial x_i} = y_j(\delta_{ij} - y_i) \quad\Rightarrow\quad
#   dx_i = \sum_j \text{dout}_j\, y_j (\delta_{ij} - y_i) = y_i\Big(\text{dout}_i - \sum_j \text{dout}_j y_j\Big).$$
#
# The $T\times T$ Jacobian $\operatorname{diag}(y) - yy^\top$ is never built: one dot product per row suffices, and
# the cache is the output $y$ itself.

# %%
x = rng.standard_normal((3, 6))
dout = rng.standard_normal((3, 6))
y = softmax_forward(x)
dx = softmax_backward(dout, y)
dx_num = numerical_grad(lambda: np.sum(softmax_forward(x) * dout), x)
err = rel_error(dx, dx_num)
print(f"softmax backward vs finite differences: {err:.1e}")
assert err < 1e-8, err
big = softmax_forward(np.array([[1000.0, 1001.0, 999.0]]))
print("softmax of [1000, 1001, 999]:", big.round(4), "(no overflow)")
assert np.all(np.isfinite(big))

# %% [markdown]
# ### Why the scores are divided by $\sqrt D$
#
# Let the entries of a query $q$ and a key $k$ be independent with mean 0 and variance 1 (what LayerNorm and a
# sensible initialization roughly give). Then each term of $q\cdot k = \sum_{d=1}^{D} q_d k_d$ has mean 0 and
# variance $\mathbb E[q_d^2]\,\mathbb E[k_d^2] = 1$, and the $D$ terms are independent, so
#
# $$\operatorname{Var}(q\cdot k) = D, \qquad \operatorname{Var}\Big(\frac{q \cdot k}{\sqrt D}\Big) = 1 .$$
#
# Unscaled, the scores spread as $\sqrt D$: for a head of width 64, differences of $\pm 16$ between scores, and a
# softmax of such numbers is nearly one-hot. A one-hot softmax has a vanishing Jacobian
# ($\operatorname{diag}(y) - yy^\top \to 0$ when $y$ is a unit vector), so almost no gradient reaches $Q$ and $K$.
# Dividing by $\sqrt D$ keeps the scores' variance at 1 whatever the head width. Measured:

# %%
T_keys, n_rows = 20, 200 if SMOKE else 2000
widths = (4, 16, 64, 256)
print(f"{'D':>4s} {'var(q.k)':>9s} {'entropy, unscaled':>18s} "
      f"{'entropy, / sqrt(D)':>19s} "
      f"{'|softmax Jacobian|, unscaled':>29s} {'/ sqrt(D)':>10s}")
entropy = {"unscaled": [], "scaled": []}
for D_ in widths:
    q_ = rng.standard_normal((n_rows, 1, D_))
    k_ = rng.standard_normal((n_rows, T_keys, D_))
    scores = (q_ @ k_.transpose(0, 2, 1))[:, 0]  # n_rows, T_keys
    row = {}
    for name, sc in (("unscaled", scores), ("scaled", scores / np.sqrt(D_))):
        y_ = softmax_forward(sc)
        entropy[name].append(float(np.mean(-np.sum(y_ * np.log(y_ + 1e-300), axis=-1))))
        # Frobenius norm
        jac = np.mean([np.linalg.norm(np.diag(r) - np.outer(r, r)) for r in y_[:50]])
        row[name] = jac
    print(f"{D_:4d} {np.var(scores):9.1f} {entropy['unscaled'][-1]:18.2f} "
          f"{entropy['scaled'][-1]:19.2f} "
          f"{row['unscaled']:29.3f} {row['scaled']:10.3f}")
    assert 0.8 * D_ < np.var(scores) < 1.2 * D_  # Var(q.k) = D
# scaled: the same spread at every width
assert max(entropy["scaled"]) - min(entropy["scaled"]) < 0.2
# unscaled: near one-hot at D = 256
assert entropy["unscaled"][-1] < 0.5 * entropy["scaled"][-1]

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.plot(widths, entropy["unscaled"], "o-", label=r"scores $q\cdot k$")
ax.plot(widths, entropy["scaled"], "o-", label=r"scores $q\cdot k/\sqrt{D}$")
ax.axhline(np.log(T_keys), color="gray", ls=":",
           label=f"uniform over {T_keys} keys (log {T_keys})")
ax.set_xscale("log", base=2)
ax.set_xlabel("head width D")
ax.set_ylabel("mean entropy of a softmax row (nats)")
ax.set_title("Without the 1/sqrt(D), wider heads attend to one key")
ax.legend(fontsize=8)
show(fig, FIGURES / "05_score_scale.png")

# %% [markdown]
# ## 2. The masks: one additive bias
#
# minidt builds one bias array $(B, 1, T, T)$ added to the scores of every head:
#
# * **causal**: $-\infty$ where key $j$ is in the future of query $i$ ($j > i$). $e^{-\infty} = 0$ exactly, so
#   a future token contributes exactly nothing, forward and backward.
# * **key padding**: the dtype's most negative finite number (`finfo.min`, $-1.8\times10^{308}$ in float64) where
#   key $j$ is padding (`attention_mask[b, j] == 0`). The reference adds that same number.
#
# Why not $-\infty$ for padding too? A Decision Transformer's segments are **left**-padded (the recent timesteps
# sit at the right end). The first query is a padded token whose only visible key (itself) is padded: with
# $-\infty$, its whole row would be $-\infty$, the row max $-\infty$, and $-\infty - (-\infty) = $ NaN.
#
# `attention_bias(attention_mask, Tq, Tk, dtype, like)` builds it (assignment 3 asks you to build it inside your
# attention; minidt's code is after the exercises). For one left-padded sequence:

# %%
mask = np.array([[0.0, 0.0, 1.0, 1.0, 1.0]])  # B=1, T=5: two padded steps on the left
bias = attention_bias(mask, 5, 5, np.float64, mask)
print("bias[0, 0] =\n",
      np.array2string(bias[0, 0], formatter={"float_kind": "{:9.1e}".format}))

# %% [markdown]
# With `finfo.min`, a padded query whose visible keys are all padded gets `finfo.min + score` for each:
# `finfo.min` absorbs the small score completely (its rounding step is $\sim 10^{292}$), so the row is constant
# and the softmax is a **uniform average over its visible keys**: finite garbage. Callers never read or train on
# padded rows (their loss weight is zero), so garbage is harmless; NaN is not, because
# $\text{NaN}\times 0 = \text{NaN}$. Watch a NaN in one padded row poison every weight gradient:

# %%
B, T, C, H = (1, 5, 8, 2) if SMOKE else (2, 12, 32, 4)
mask = np.ones((B, T))
mask[:, :2] = 0.0  # left padding
x = rng.standard_normal((B, T, C))
# the loss ignores padded positions: zero gradient there
dout = rng.standard_normal((B, T, C)) * mask[:, :, None]

results = {}
for name, pad_value in (("finfo.min (minidt)", np.finfo(np.float64).min),
                        ("-inf", -np.inf)):
    attn = CausalSelfAttention(C, H, std=0.3, gen=Generator(0), dtype="float64")
    causal = attention_bias(None, T, T, np.float64, x)
    # a hand-made bias with the chosen pad value
    b_ = np.where(mask[:, None, None, :] == 0, pad_value, causal)
    with np.errstate(invalid="ignore"):
        y, probs, _ = attn(x, bias=b_)
        attn.backward(dout)
    results[name] = (y, attn.c_attn.weight.grad)
    print(f"{name:19s}: NaN in outputs at real positions: {np.isnan(y[:, 2:]).any()}, "
          f"NaN in the padded rows: {np.isnan(y[:, :2]).any()}, "
          "NaN entries in c_attn.weight.grad: "
          f"{np.isnan(attn.c_attn.weight.grad).mean():.0%}")
assert not np.isnan(results["finfo.min (minidt)"][1]).any()
# one NaN row poisoned the whole weight gradient
assert np.isnan(results["-inf"][1]).all()

# %% [markdown]
# ## 3. Attention, backward
#
# Chain the pieces backward: $O = PV$ gives $dV = P^\top dO$ and $dP = dO\,V^\top$; the softmax gives $dS$ row
# by row (section 1); $S = QK^\top \cdot \text{scale}$ gives $dQ = dS\,K \cdot \text{scale}$ and
# $dK = dS^\top Q \cdot \text{scale}$. The bias is a constant: masked entries have $P = 0$, so the softmax backward
# gives them $dS = 0$ by itself; there is no mask to re-apply. (Dropout on $P$, when active, multiplies $dP$ by the
# same mask.)
#
# One subtlety for the check: in a fully padded row every score is `finfo.min + s`, which rounds to `finfo.min`
# whatever $s$ is. The *computed* function is flat there, while the backward differentiates the exact formula, so
# finite differences and backward disagree in those rows. That is the finite garbage again, and it is why the
# upstream gradient is zero at padded positions, in this check as in training. (The softmax pair and
# `attention_backward` are assignment 3's: minidt's code is after the exercises.)

# %%
D = C // H
q, k, v = (rng.standard_normal((B, H, T, D)) for _ in range(3))
bias = attention_bias(mask, T, T, np.float64, q)
scale = D ** -0.5
# the loss reads real positions only
dO = rng.standard_normal((B, H, T, D)) * mask[:, None, :, None]
O, P, cache = attention_forward(q, k, v, bias, scale, 0.0, None)
dq, dk, dv = attention_backward(dO, cache)


def attention_loss():
    return np.sum(attention_forward(q, k, v, bias, scale, 0.0, None)[0] * dO)


errs = {n: rel_error(a, numerical_grad(attention_loss, t))
        for n, a, t in (("dq", dq, q), ("dk", dk, k),
                                                                         ("dv", dv, v))}
print("attention backward vs finite differences:",
      {n: f"{e:.1e}" for n, e in errs.items()})
assert max(errs.values()) < 1e-8, errs

if torch is not None:
    qt, kt, vt = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    Ot = torch.softmax(qt @ kt.transpose(-1, -2) * scale + torch.tensor(bias),
                       dim=-1) @ vt
    (Ot * torch.tensor(dO)).sum().backward()
    terrs = {"out": rel_error(O, Ot.detach().numpy()),
             "dq": rel_error(dq, qt.grad.numpy()),
             "dk": rel_error(dk, kt.grad.numpy()), "dv": rel_error(dv, vt.grad.numpy())}
    print("attention vs PyTorch:", {n: f"{e:.1e}" for n, e in terrs.items()})
    assert max(terrs.values()) < 1e-12, terrs

# %% [markdown]
# ## 4. Heads are contiguous slices
#
# GPT-2 computes $Q | K | V$ with one Conv1D of width $3C$ (`c_attn`), then splits each of the three $C$-wide
# blocks into $H$ heads of width $D = C/H$: head $h$ owns columns $hD{:}(h+1)D$. A reshape $(B,T,C) \to
# (B,T,H,D)$ and a transpose to $(B,H,T,D)$ does exactly that, and every head attends independently in one batched
# matrix multiply. `merge_heads` is the inverse, so the heads' outputs sit side by side again before `c_proj`.
# Checkpoint compatibility depends on this layout: any other slicing gives a different model with the same shapes.

# %%
print(inspect.getsource(split_heads))
X = rng.standard_normal((B, T, C))
heads = split_heads(X, H)
for h in range(H):
    assert np.array_equal(heads[:, h], X[:, :, h * D:(h + 1) * D])
assert np.array_equal(merge_heads(heads), X)
print(f"split_heads: head h == columns h*{D}:(h+1)*{D}, for all {H} heads; merge_heads "
      "inverts it")

# one head by hand, from its slices of c_attn's output, equals that head of the batched
# computation
attn = CausalSelfAttention(C, H, std=0.3, gen=Generator(1), dtype="float64")
y, probs, _ = attn(X, attention_mask=mask)
qkv = X @ attn.c_attn.weight.data + attn.c_attn.bias.data  # B,T,3C
h = H - 1
qh, kh = qkv[..., h * D:(h + 1) * D], qkv[..., C + h * D:C + (h + 1) * D]
S = qh @ kh.transpose(0, 2, 1) / np.sqrt(D) + bias[:, 0]
assert np.max(np.abs(softmax_forward(S) - probs[:, h])) < 1e-14
print(f"head {h} computed alone from its column slices == head {h} of the module")

# %% [markdown]
# ## 5. The whole module, checked
#
# `CausalSelfAttention` = `c_attn`, split heads, attention, merge heads, `c_proj`. Its backward runs the same chain
# in reverse, reassembling $dQ | dK | dV$ into one $(B, T, 3C)$ gradient for `c_attn`. Finite differences on the
# input and on every weight (float64, dropout off), through the fake loss, at real positions only (where the loss
# looks):

# %%
attn = CausalSelfAttention(C, H, std=0.3, gen=Generator(2), dtype="float64")
y, _, _ = attn(X, attention_mask=mask)
dX = attn.backward(dout)


def module_loss():
    return np.sum(attn(X, attention_mask=mask)[0] * dout)


checks = {"x": (dX, X)}
checks |= {name: (p.grad, p.data) for name, p in attn.named_parameters()}
for name, (analytic, array) in checks.items():
    e = rel_error(analytic, numerical_grad(module_loss, array))
    print(f"d{name:15s} vs finite differences: {e:.1e}")
    assert e < 1e-8, (name, e)

# %% [markdown]
# ## 6. Causality, numerically, and the attention maps
#
# Causality is a property we can test, not just hope for: perturb the input at step $t$, and outputs before $t$
# must not move *at all* (the masked scores are $-\infty$, the weights exactly 0). The gradient says the same from
# the other side: $\partial y_i / \partial x_j = 0$ for $j > i$.

# %%
with minidt.no_grad():  # forward-only probes: nothing is kept for a backward
    mask1 = np.ones((1, T))
    x1 = rng.standard_normal((1, T, C))
    y_base = attn(x1, attention_mask=mask1)[0]
    worst_past = 0.0
    for t in range(T):
        x_pert = x1.copy()
        x_pert[0, t] += 1.0
        y_pert = attn(x_pert, attention_mask=mask1)[0]
        worst_past = max(worst_past, np.max(np.abs(y_pert[0, :t] - y_base[0, :t]),
                                            initial=0.0))
        # the present and future do react
        assert np.max(np.abs(y_pert[0, t:] - y_base[0, t:])) > 1e-6
print(f"largest change of an output before the perturbed step: {worst_past:.1e}")
assert worst_past == 0.0, worst_past

influence = np.zeros((T, T))  # influence[i, j] = || d y_i / d x_j ||
for i in range(T):
    # one backward per output coordinate of token i gives the Jacobian block
    for row in range(C):
        g = np.zeros((1, T, C))
        g[0, i, row] = 1.0
        attn(x1, attention_mask=mask1)
        influence[i] += np.sum(attn.backward(g)[0] ** 2, axis=-1)
influence = np.sqrt(influence)
attn.zero_grad()
print("max ||dy_i/dx_j|| above the diagonal (j > i): "
      f"{np.max(np.triu(influence, 1)):.1e}")
assert np.max(np.triu(influence, 1)) == 0.0
assert np.min(np.diag(influence)) > 0.0

# %% [markdown]
# The maps: the additive bias for a left-padded sequence, each head's attention weights $P$ on it, and the
# influence matrix. Rows are queries, columns keys. The two padded query rows at the top attend uniformly to
# their visible (padded) keys: the finite garbage of section 2.

# %%
attn_maps = CausalSelfAttention(C, H, std=0.5, gen=Generator(3), dtype="float64").eval()
with minidt.no_grad():
    _, probs, _ = attn_maps(X[:1], attention_mask=mask[:1])
bias_img = np.where(np.isneginf(bias[0, 0]), np.nan,
                    np.where(bias[0, 0] < -1e300, -1.0, 0.0))
ncols = H + 2
fig, axes = plt.subplots(1, ncols, figsize=(3.2 * ncols, 3.4))
axes[0].imshow(bias_img, cmap="coolwarm_r", vmin=-1, vmax=1)
axes[0].set_title("bias: 0 / finfo.min (red)\n/ -inf (blank)", fontsize=9)
for h in range(H):
    axes[1 + h].imshow(probs[0, h], cmap="viridis", vmin=0, vmax=1)
    axes[1 + h].set_title(f"head {h}: attention P", fontsize=9)
axes[-1].imshow(influence, cmap="magma")
axes[-1].set_title(r"$\|\partial y_i / \partial x_j\|$ (no mask)", fontsize=9)
for ax in axes:
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
fig.tight_layout()
show(fig, FIGURES / "05_attention_maps.png")

# %% [markdown]
# Finally, the whole module on the strict backend (the masks are built with `xp.where` and `xp.arange` on the
# input's device, never on the host):

# %%
strict = get_backend("strict")
attn_s = CausalSelfAttention(C, H, std=0.3, gen=Generator(2, strict), backend=strict,
                             dtype="float64")
y_s, _, _ = attn_s(strict.asarray(X), attention_mask=strict.asarray(mask))
dX_s = attn_s.backward(strict.asarray(dout))
err_s = max(rel_error(to_numpy(y_s), y), rel_error(to_numpy(dX_s), dX))
print(f"strict backend vs numpy (output and dx): {err_s:.1e}")
assert err_s < 1e-12, err_s

# %% [markdown]
# **Summary.** One additive bias carries both masks: $-\infty$ for the future, `finfo.min` for padded keys, so a
# fully padded row stays finite (NaN would poison every gradient through $\text{NaN}\times0$). Softmax backward is
# $y\odot(\text{dout} - \langle \text{dout}, y\rangle)$ per row; the bias needs no backward. Heads are contiguous
# column slices of $Q$, $K$, $V$, attended in one batched product. Causality holds exactly, and is tested.

# %% [markdown]
# **Graded.** `minidt assignment start attention DIR` asks for `softmax_forward` / `softmax_backward` and
# `attention_forward` / `attention_backward` with the padding mask; `minidt grade DIR/attention.py` checks them.
#
# ## Exercises
#
# **1. Predict, then run.** Remove the causal mask (keep only the key padding). Sketch the attention map of
# section 6 first: which entries become nonzero? Then run: does the causality probe still find
# $\max |\Delta y_{<t}| = 0$?
#
# **2. Plant a bug, watch the check catch it.** Write the softmax backward as `dout * y` (forgetting the
# $-\sum_j \text{dout}_j y_j$ term, as if the softmax were entrywise). What relative error will the check print?
#
# **3. Derive before the reveal.** Show that each row of the softmax's input gradient sums to zero, for any
# `dout`. Why must it? (Hint: add a constant to every score of a row.)
#
# ### Solutions
#
# Each solution is one cell, collapsed in the book; in the script, everything below this line is the solutions.

# %% tags=["hide-cell"]
# Solution 1: without the causal mask every real query reads every real key: the upper
# triangle fills in (the padded columns stay zero), and a perturbation of a future step
# now moves the past.
# bias from the padding mask alone...
pad_only = attention_bias(mask1, T, T, np.float64, x1)
# ...with the causal -inf entries removed
pad_only = np.where(np.isneginf(pad_only), 0.0, pad_only)
q1, k1, v1 = (rng.standard_normal((1, 1, T, D)) for _ in range(3))
causal_bias = attention_bias(mask1, T, T, np.float64, x1)
_, P_causal, _ = attention_forward(q1, k1, v1, causal_bias, scale, 0.0, None)
O_free, P_free, _ = attention_forward(q1, k1, v1, pad_only, scale, 0.0, None)
v_pert = v1.copy()
v_pert[0, 0, -1] += 1.0  # change the value of the last (future) token
O_pert, _, _ = attention_forward(q1, k1, v_pert, pad_only, scale, 0.0, None)
print(f"upper triangle of P: causal {np.triu(P_causal[0, 0], 1).max():.2f}, "
      f"no causal mask {np.triu(P_free[0, 0], 1).max():.2f};  "
      "change of output 0 after changing the last value: "
      f"{np.abs(O_pert - O_free)[0, 0, 0].max():.2e}")
assert np.triu(P_causal[0, 0], 1).max() == 0.0 and np.triu(P_free[0, 0], 1).max() > 0.0
assert np.abs(O_pert - O_free)[0, 0, 0].max() > 0.0  # the past now sees the future

fig, (a0, a1) = plt.subplots(1, 2, figsize=(7, 3.4))
a0.imshow(P_causal[0, 0], cmap="viridis", vmin=0, vmax=1)
a0.set_title("causal", fontsize=9)
a1.imshow(P_free[0, 0], cmap="viridis", vmin=0, vmax=1)
a1.set_title("causal mask removed", fontsize=9)
for a_ in (a0, a1):
    a_.set_xlabel("key j")
    a_.set_ylabel("query i")
show(fig, FIGURES / "05_exercise_no_causal_mask.png")

# %% tags=["hide-cell"]
# Solution 2: order 1. dout * y is the diagonal of the Jacobian alone; the rank-one term
# y y^T is as large.
x_s = rng.standard_normal((3, 6))
dout_s = rng.standard_normal((3, 6))
err_sm = rel_error(dout_s * softmax_forward(x_s),
                   numerical_grad(lambda: np.sum(softmax_forward(x_s) * dout_s), x_s))
print(f"softmax backward without the dot-product term: relative error {err_sm:.1e}")
assert err_sm > 0.1, err_sm

# %% [markdown]
# :::{dropdown} Solution 3
# $\sum_i dx_i = \sum_i y_i \text{dout}_i - \big(\sum_i y_i\big)\big(\sum_j \text{dout}_j y_j\big) = 0$, because
# $\sum_i y_i = 1$. It must: adding the same constant to every score of a row leaves the softmax unchanged, so
# the derivative along the all-ones direction, $\sum_i \partial L / \partial x_i$, is zero. (The same reason makes
# subtracting the row maximum free.)
# Check: `softmax_backward(dout, softmax_forward(x)).sum(-1)` is zero to round-off.
# :::

# %% [markdown]
# #### After you have done assignment 3
#
# The softmax pair, `attention_bias` and `attention_backward` as minidt ships them: the reference solution of
# assignment 3 (`minidt assignment start attention DIR`). Collapsed in the book: read it once your own passes
# `minidt grade`.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the code (after assignment 3)"}
for fn in (softmax_forward, softmax_backward, attention_bias, attention_backward):
    print(inspect.getsource(fn))
