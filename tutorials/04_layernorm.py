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
# # 04 · LayerNorm: deriving the backward pass
#
# *Full size: about 7 s on 2 idle CPU cores; `MINIDT_SMOKE=1`: seconds.*
#
# A Decision Transformer has $2\,n_\text{layer} + 2$ LayerNorms: `ln_1` and `ln_2` in every block, `ln_f` at the top,
# and `embed_ln` over the interleaved tokens. LayerNorm's backward is the first one in this series that is not a
# one-liner: every output depends on every input of its row, through the mean and through the variance. Forgetting
# either path is the classic bug, and this tutorial plants both.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the set-up"}
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np

from minidt.backend import get_backend, to_numpy
from minidt.layers.layernorm import layernorm_backward, layernorm_forward
from minidt.gradcheck import numerical_grad, rel_error  # tutorial 01 derives them
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
# ## Forward
#
# Each row $x \in \mathbb{R}^N$ (one token's $N = C$ features) is normalized to mean 0 and variance 1, then scaled
# and shifted by learned $w, b \in \mathbb{R}^N$:
#
# $$\begin{aligned}
#   \mu &= \frac1N \sum_j x_j, & \sigma^2 &= \frac1N \sum_j (x_j - \mu)^2, &
#   r &= \frac{1}{\sqrt{\sigma^2 + \epsilon}}, \\
#   \hat x_j &= (x_j - \mu)\, r, & y_j &= w_j \hat x_j + b_j.
# \end{aligned}$$
#
# As in `torch.nn.LayerNorm`: the *biased* variance (divide by $N$, not $N-1$) and $\epsilon$ *inside* the square
# root. Either detail changed gives a different function, and a parity test catches it. minidt keeps
# $r$ ("rstd"), not $\sigma$: backward multiplies by $1/\sigma$, never divides. Its cache is $(x, w, \mu, r)$.
# (`layernorm_forward` and `layernorm_backward` are what assignment 2 asks for: minidt's code is after the
# exercises, collapsed. This page derives them and checks them.)
#
# ## Backward, derived
#
# The easy parts first. $y_j = w_j \hat x_j + b_j$ for every row, so summing over rows (tokens),
# $\;dw = \sum_\text{rows} \text{dout} \odot \hat x$, $\;db = \sum_\text{rows} \text{dout}$, and the gradient
# reaching $\hat x$ is $g = \text{dout} \odot w$.
#
# Now $\hat x_j = (x_j - \mu)\,r$ depends on $x_i$ three ways: directly (only when $i = j$), through $\mu$, and
# through $r$. With $\partial\mu/\partial x_i = 1/N$ and
#
# $$\begin{aligned}
#   \frac{\partial \sigma^2}{\partial x_i} &= \frac2N \sum_j (x_j - \mu)\Big(\delta_{ij} - \frac1N\Big)
#   = \frac2N (x_i - \mu) \quad\Big(\text{since } \textstyle\sum_j (x_j - \mu) = 0\Big), \\
#   \frac{\partial r}{\partial x_i} &= -\tfrac12 (\sigma^2+\epsilon)^{-3/2} \frac{\partial\sigma^2}{\partial x_i}
#   = -\frac{r^2\, \hat x_i}{N},
# \end{aligned}$$
#
# the product rule gives
#
# $$\frac{\partial \hat x_j}{\partial x_i} = r\Big(\delta_{ij} - \underbrace{\frac1N}_{\text{via }\mu}\Big)
#   \;\underbrace{-\; \frac{r}{N}\, \hat x_j \hat x_i}_{\text{via } r}.$$
#
# Contract with $g$, $\;dx_i = \sum_j g_j\, \partial \hat x_j / \partial x_i$:
#
# $$\boxed{\;dx = r\Big(g \;-\; \underbrace{\operatorname{mean}(g)}_{\text{mean term}} \;-\;
#   \underbrace{\hat x \operatorname{mean}(g \odot \hat x)}_{\text{variance term}}\Big)\;}$$
#
# Read it as (nearly) a projection: $dx$ is $r\,g$ with its component along the all-ones vector removed (the
# output cannot change if every input shifts by the same amount) and, almost, its component along $\hat x$ (nor,
# almost, if the inputs are scaled about their mean). The first removal is exact. The second is exact only at
# $\epsilon = 0$: then $\lVert\hat x\rVert^2 = N$, and
# $I - \tfrac1N\mathbf{1}\mathbf{1}^\top - \tfrac1N\hat x\hat x^\top$ is an orthogonal projection. With
# $\epsilon > 0$, $\lVert\hat x\rVert^2 = N\sigma^2/(\sigma^2+\epsilon) < N$, so only the fraction
# $\sigma^2/(\sigma^2+\epsilon)$ of the $\hat x$ component is removed (scaling the inputs does change the output
# a little: $\epsilon$ is not scaled with them). Both sums run over the row; each row is independent.
#
# ## Checked against finite differences
#
# Fake loss $L = \sum y \odot \text{dout}$, random `dout`, float64, non-trivial $w$ and $b$ (at init $w = 1$,
# $b = 0$, which would hide a swapped $w$ and $b$ gradient).

# %%
shape = (2, 3, 8) if SMOKE else (2, 8, 64)
C = shape[-1]
eps = 1e-5
x = rng.standard_normal(shape) + 0.5
w = 1.0 + 0.3 * rng.standard_normal(C)
b = 0.3 * rng.standard_normal(C)
dout = rng.standard_normal(shape)

y, cache = layernorm_forward(x, w, b, eps)
dx, dw, db = layernorm_backward(dout, cache)


def loss():
    return np.sum(layernorm_forward(x, w, b, eps)[0] * dout)


dx_num, dw_num, db_num = (numerical_grad(loss, a) for a in (x, w, b))
errs = {"dx": rel_error(dx, dx_num), "dw": rel_error(dw, dw_num),
        "db": rel_error(db, db_num)}
print("relative error vs finite differences:", {k: f"{v:.1e}" for k, v in errs.items()})
assert max(errs.values()) < 1e-8, errs

# %% [markdown]
# ## The planted bugs
#
# Drop the mean term (as if $\mu$ were a constant), or the variance term (as if $r$ were a constant):

# %%
def layernorm_backward_no_mean_term(dout, cache):
    x, w, mean, rstd = cache
    xhat = (x - mean) * rstd
    g = dout * w
    return (g - xhat * np.mean(g * xhat, axis=-1, keepdims=True)) * rstd


def layernorm_backward_no_variance_term(dout, cache):
    x, w, mean, rstd = cache
    g = dout * w
    return (g - np.mean(g, axis=-1, keepdims=True)) * rstd


err_no_mean = rel_error(layernorm_backward_no_mean_term(dout, cache), dx_num)
err_no_var = rel_error(layernorm_backward_no_variance_term(dout, cache), dx_num)
print(f"dx without the mean term:     relative error {err_no_mean:.1e}")
print(f"dx without the variance term: relative error {err_no_var:.1e}")
assert err_no_mean > 1e-2 and err_no_var > 1e-2, (err_no_mean, err_no_var)

# %% [markdown]
# ### Why `dout` must be random: a bug that hides from `sum(y)`
#
# With the tempting loss $L = \sum y$ (`dout` all ones) and $w = 1$, $g$ is constant along each row, so
# $\operatorname{mean}(g \odot \hat x) = g \operatorname{mean}(\hat x) = 0$. The variance term vanishes, and the
# buggy backward without it agrees perfectly with the true gradient, which is exactly zero: $\sum_j y_j = \sum_j b_j$
# does not depend on $x$ at all.

# %%
ones = np.ones_like(x)
_, cache1 = layernorm_forward(x, np.ones(C), b, eps)
true_dx1, _, _ = layernorm_backward(ones, cache1)
print(f"loss = sum(y): max |true dx| = {np.max(np.abs(true_dx1)):.1e}, max |dx without "
      "the variance term| = "
      f"{np.max(np.abs(layernorm_backward_no_variance_term(ones, cache1))):.1e}  (the "
      "bug is invisible)")
assert np.max(np.abs(layernorm_backward_no_variance_term(ones, cache1))) < 1e-12

# %% [markdown]
# ## The Jacobian, and the errors, drawn
#
# Left: the Jacobian $\partial \hat x_j / \partial x_i$ of one row, $r\,(I - \tfrac1N \mathbf{1}\mathbf{1}^\top -
# \tfrac1N \hat x \hat x^\top)$, by finite differences: a scaled identity minus two rank-one terms. Right: the
# relative error of each backward version against finite differences.

# %%
row = x[(0,) * (x.ndim - 1)].copy()  # one row, N entries
N = row.size
J = np.zeros((N, N))
for i in range(N):
    e = np.zeros(N)
    e[i] = 1e-6
    J[:, i] = (layernorm_forward(row + e, np.ones(N), np.zeros(N), eps)[0]
               - layernorm_forward(row - e, np.ones(N), np.zeros(N), eps)[0]) / 2e-6
_, c_row = layernorm_forward(row, np.ones(N), np.zeros(N), eps)
r = c_row[3][0]
xhat = (row - c_row[2][0]) * r
J_formula = r * (np.eye(N) - 1.0 / N - np.outer(xhat, xhat) / N)
err_J = rel_error(J_formula, J)
print(f"Jacobian formula vs finite differences: {err_J:.1e}")
assert err_J < 1e-8, err_J
# a projection P satisfies P @ P == P: exactly at eps = 0, not at the eps = 1e-5 of a
# row with small variance
# the second row has variance ~1e-4: eps matters
for eps_p, row_p in ((0.0, row), (1e-5, row * 1e-2)):
    _, c_p = layernorm_forward(row_p, np.ones(N), np.zeros(N), eps_p)
    xh = (row_p - c_p[2][0]) * c_p[3][0]
    P = np.eye(N) - 1.0 / N - np.outer(xh, xh) / N
    print(f"eps = {eps_p:g}, row variance {np.var(row_p):.1e}: max |P @ P - P| = "
          f"{np.max(np.abs(P @ P - P)):.1e}")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
lim = np.max(np.abs(J))
im = ax0.imshow(J, cmap="RdBu_r", vmin=-lim, vmax=lim)
fig.colorbar(im, ax=ax0)
ax0.set_title(r"LayerNorm Jacobian $\partial \hat x_j / \partial x_i$, one row")
ax0.set_xlabel("input i")
ax0.set_ylabel("output j")
labels = ["correct", "no mean term", "no variance term"]
values = [errs["dx"], err_no_mean, err_no_var]
ax1.bar(labels, values, color=["C2", "C3", "C3"])
ax1.set_yscale("log")
ax1.axhline(1e-8, color="k", ls="--", lw=1, label="tolerance 1e-8")
ax1.set_ylabel("relative error of dx vs finite differences")
ax1.legend()
fig.tight_layout()
show(fig, FIGURES / "04_layernorm_backward.png")

# %% [markdown]
# ## Checked against PyTorch
#
# llm.c's recipe: run `torch.nn.functional.layer_norm` on the same float64 inputs, backpropagate the same fake loss,
# compare every gradient.

# %%
if torch is not None:
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    yt = torch.nn.functional.layer_norm(xt, (C,), wt, bt, eps)
    (yt * torch.tensor(dout)).sum().backward()
    terrs = {"y": rel_error(y, yt.detach().numpy()),
             "dx": rel_error(dx, xt.grad.numpy()),
             "dw": rel_error(dw, wt.grad.numpy()), "db": rel_error(db, bt.grad.numpy())}
    print("relative error vs PyTorch:", {k: f"{v:.1e}" for k, v in terrs.items()})
    assert max(terrs.values()) < 1e-12, terrs
    terr_bug = rel_error(layernorm_backward_no_mean_term(dout, cache), xt.grad.numpy())
    print(f"without the mean term, vs PyTorch: {terr_bug:.1e}")
    assert terr_bug > 1e-2, terr_bug

# %% [markdown]
# The same code on the strict backend (it uses only `mean`, `sqrt`, `sum`, `reshape` of the Array API):

# %%
strict = get_backend("strict")
_, cache_s = layernorm_forward(strict.asarray(x), strict.asarray(w), strict.asarray(b),
                               eps)
dx_s, dw_s, db_s = layernorm_backward(strict.asarray(dout), cache_s)
err_s = max(rel_error(to_numpy(dx_s), dx), rel_error(to_numpy(dw_s), dw),
            rel_error(to_numpy(db_s), db))
print(f"strict backend vs numpy: {err_s:.1e}")
assert err_s < 1e-14, err_s

# %% [markdown]
# **Summary.** $dx = r\,(g - \operatorname{mean}(g) - \hat x \operatorname{mean}(g\odot\hat x))$ with
# $g = \text{dout}\odot w$: the mean term is the gradient through $\mu$, the variance term the gradient through
# $r$. Dropping either gives an $O(1)$ error, which a check with a random `dout` catches and a check with
# `sum(y)` may not.

# %% [markdown]
# **Graded.** `minidt assignment start layernorm DIR` asks for `layernorm_forward` and `layernorm_backward`;
# `minidt grade DIR/layernorm.py` checks them against finite differences and this reference.
#
# ## Exercises
#
# **1. Predict, then run.** Whatever `dout` is, what is the sum of `dx` over a row? And its dot product with
# $\hat x$: exactly zero, or only almost?
#
# **2. Plant a bug, watch the check catch it.** Take the two means of the backward over the wrong axis
# (`axis=0`, across tokens, instead of `axis=-1`, across features). Every shape still fits: will the check
# notice?
#
# **3. Derive before the reveal.** With $w = 1$, $b = 0$ and $\text{dout} = \hat x$ (the gradient of
# $\tfrac12\lVert y\rVert^2$), simplify the boxed formula. Why is the result zero at $\epsilon = 0$?
#
# ### Solutions
#
# Each solution is one cell, collapsed in the book; in the script, everything below this line is the solutions.

# %% tags=["hide-cell"]
# Solution 1: sum(dx) = 0 exactly (the mean term removes the all-ones component, an
# exact projection); dx . xhat = r * N * mean(g xhat) * (1 - mean(xhat^2)): zero only
# when mean(xhat^2) = 1, i.e. at eps = 0.
xhat_all = (x - cache[2]) * cache[3]
print(f"max |sum of dx over a row| = {np.max(np.abs(dx.sum(-1))):.1e};  "
      f"max |dx . xhat| = {np.max(np.abs(np.sum(dx * xhat_all, -1))):.1e} "
      f"(eps = {eps})")
assert np.max(np.abs(dx.sum(-1))) < 1e-10


# %% tags=["hide-cell"]
# Solution 2: yes, at once. The means now average each feature over the tokens, mixing
# rows that LayerNorm keeps independent; keepdims makes every shape broadcast, so only a
# numerical check can tell.
def layernorm_backward_wrong_axis(dout, cache):
    x, w, mean, rstd = cache
    xhat = (x - mean) * rstd
    g = dout * w
    mean_g = np.mean(g, axis=0, keepdims=True)
    mean_gx = np.mean(g * xhat, axis=0, keepdims=True)
    return (g - mean_g - xhat * mean_gx) * rstd


x2 = x.reshape(-1, C)
_, cache2 = layernorm_forward(x2, w, b, eps)
dout2 = dout.reshape(-1, C)
dx2_num = numerical_grad(lambda: np.sum(layernorm_forward(x2, w, b, eps)[0] * dout2),
                         x2)
err_axis = rel_error(layernorm_backward_wrong_axis(dout2, cache2), dx2_num)
print(f"means over the wrong axis, {x2.shape[0]} rows: relative error {err_axis:.1e}")
assert err_axis > 1e-2, err_axis

# %% [markdown]
# :::{dropdown} Solution 3
# With $w = 1$, $g = \text{dout} = \hat x$. Its mean is 0, and $\operatorname{mean}(g \odot \hat x) =
# \operatorname{mean}(\hat x^2) = \sigma^2 / (\sigma^2 + \epsilon)$. So
# $dx = r\,\hat x\,\big(1 - \sigma^2/(\sigma^2+\epsilon)\big) = r\,\hat x\,\epsilon/(\sigma^2+\epsilon)$.
# At $\epsilon = 0$, $\lVert y\rVert^2 = \lVert\hat x\rVert^2 = N$ whatever $x$ is, so the loss is a constant and
# its gradient is zero; with $\epsilon > 0$ scaling $x$ up moves $\lVert\hat x\rVert$ towards $\sqrt N$, a small
# gradient proportional to $\epsilon$. Check: `layernorm_backward(xhat, cache)[0]` against
# `rstd * xhat * eps / (var + eps)`.
# :::

# %% [markdown]
# #### After you have done assignment 2
#
# `layernorm_forward` and `layernorm_backward` as minidt ships them: the reference solution of assignment 2 (`minidt
# assignment start layernorm DIR`). Collapsed in the book: read it once your own passes `minidt grade`.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the code (after assignment 2)"}
print(inspect.getsource(layernorm_forward))
print(inspect.getsource(layernorm_backward))
