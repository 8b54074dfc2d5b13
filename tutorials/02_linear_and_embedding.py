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
# # 02 · Linear layers and embeddings: forward, backward, checked
#
# *Full size: about 7 s on 2 idle CPU cores; `MINIDT_SMOKE=1`: seconds.*
#
# Most parameters of a Decision Transformer sit in two kinds of layer: affine maps (GPT-2's attention and MLP, the
# DT's input embeddings and prediction heads) and lookup tables (the timestep embedding, GPT-2's position
# embedding). Both have short backward passes, and each has one classic trap: the affine map's weight *layout*,
# and the embedding's *repeated indices*.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the set-up"}
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np

import minidt
from minidt.backend import get_backend, scatter_add, to_numpy
from minidt.layers.embedding import embedding_backward, embedding_forward
from minidt.layers.linear import (conv1d_backward, conv1d_forward, linear_backward,
                                  linear_forward)
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
# ## 1. Two layouts of one affine map
#
# An affine map sends each input row $x \in \mathbb{R}^{I}$ to $y \in \mathbb{R}^{O}$. The reference stores its
# weight in two layouts, and a checkpoint loader must know which is which:
#
# | layer | weight shape | forward | used by |
# |---|---|---|---|
# | GPT-2 `Conv1D` | $(I, O)$ | $Y = XW + b$ | `attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj` |
# | `torch.nn.Linear` | $(O, I)$ | $Y = XW^\top + b$ | `embed_state`, `embed_action`, `embed_return`, `predict_*` |
#
# (`Conv1D` is a historical name from the original GPT: a 1-D convolution with kernel size 1 *is* a per-token
# affine map.) Same function, transposed storage:

# %%
dt = minidt.DecisionTransformerModel(state_dim=3, act_dim=1, hidden_size=16)
for name, p in dt.named_parameters():
    if name in ("encoder.h.0.attn.c_attn.weight", "encoder.h.0.mlp.c_fc.weight",
                "embed_state.weight",
                "predict_action.0.weight"):
        print(f"{name:34s} {p.shape}")

I, O = 5, 3
X = rng.standard_normal((2, 4, I))  # leading dims (B, T) are flattened into one N = B*T
W_conv = rng.standard_normal((I, O))
b = rng.standard_normal(O)
y_conv, _ = conv1d_forward(X, W_conv, b)
y_lin, _ = linear_forward(X, W_conv.T, b)  # nn.Linear with the transposed weight
print("Conv1D(W) == Linear(W.T):", np.allclose(y_conv, y_lin), "| out shape",
      y_conv.shape)
assert np.max(np.abs(y_conv - y_lin)) < 1e-14

# %% [markdown]
# minidt's forward flattens the leading dimensions so each product is one 2-D matrix multiply (one BLAS call); its
# cache holds the flattened input, the weight and the input's shape (the code is assignment 1's, after the
# exercises):

# %%
_, (X2, _, X_shape) = conv1d_forward(X, W_conv, b)
print("flattened input", X2.shape, "from", X_shape)
assert X2.shape == (2 * 4, I) and X_shape == X.shape

# %% [markdown]
# ## 2. The backward pass
#
# Write the flattened input as $X \in \mathbb{R}^{N\times I}$ and the upstream gradient as
# $G = \partial L/\partial Y \in \mathbb{R}^{N\times O}$. For Conv1D, $Y_{no} = \sum_i X_{ni} W_{io} + b_o$, so
#
# $$\begin{aligned}
#   \frac{\partial L}{\partial X_{ni}} &= \sum_o G_{no} W_{io} &&\Rightarrow\; dX = G W^\top, \\
#   \frac{\partial L}{\partial W_{io}} &= \sum_n X_{ni} G_{no} &&\Rightarrow\; dW = X^\top G, \\
#   \frac{\partial L}{\partial b_o} &= \sum_n G_{no} &&\Rightarrow\; db = \textstyle\sum_n G_{n,:}.
# \end{aligned}$$
#
# Every row $n$ (every token of every sequence) used the same $W$ and $b$, so their gradients are **sums over
# rows**. A shape check catches most mistakes: $dW$ must have $W$'s shape, and there is only one way to multiply
# $X$ and $G$ into an $(I, O)$ matrix. For `nn.Linear`, $W$ is stored transposed, so $dX = GW$ and
# $dW = G^\top X$, shape $(O, I)$. Both are checked against central differences, through the fake loss
# $L = \sum Y \odot G$ (tutorial 01):

# %%
N_shape = (2, 3) if SMOKE else (4, 16)
I, O = (4, 3) if SMOKE else (24, 16)
X = rng.standard_normal((*N_shape, I))
G = rng.standard_normal((*N_shape, O))
b = rng.standard_normal(O)
for name, fwd, bwd, W in (("Conv1D", conv1d_forward, conv1d_backward,
                           rng.standard_normal((I, O))),
                          ("Linear", linear_forward, linear_backward,
                           rng.standard_normal((O, I)))):
    y, cache = fwd(X, W, b)
    dX, dW, db = bwd(G, cache)

    def loss():
        return np.sum(fwd(X, W, b)[0] * G)

    errs = [rel_error(dX, numerical_grad(loss, X)),
            rel_error(dW, numerical_grad(loss, W)),
            rel_error(db, numerical_grad(loss, b))]
    print(f"{name}: rel. error vs finite differences  dX {errs[0]:.1e}  dW "
          f"{errs[1]:.1e}  db {errs[2]:.1e}")
    assert max(errs) < 1e-8, errs

    if torch is not None:  # PyTorch's F.linear takes the nn.Linear layout (O, I)
        Xt = torch.tensor(X, requires_grad=True)
        Wt = torch.tensor(W if name == "Linear" else W.T.copy(), requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        yt = torch.nn.functional.linear(Xt, Wt, bt)
        (yt * torch.tensor(G)).sum().backward()
        dW_t = Wt.grad.numpy() if name == "Linear" else Wt.grad.numpy().T
        terrs = [rel_error(y, yt.detach().numpy()), rel_error(dX, Xt.grad.numpy()),
                 rel_error(dW, dW_t),
                 rel_error(db, bt.grad.numpy())]
        print(f"{name}: rel. error vs PyTorch  y {terrs[0]:.1e}  dX {terrs[1]:.1e}  dW "
              f"{terrs[2]:.1e}  "
              f"db {terrs[3]:.1e}")
        assert max(terrs) < 1e-12, terrs

# %% [markdown]
# ## 3. Embedding: a lookup forward, a scatter-add backward
#
# An embedding table $W \in \mathbb{R}^{V\times C}$ maps integer ids to rows: $\text{out}_n = W_{\text{ids}_n}$.
# It is a linear layer applied to one-hot vectors, $\text{out} = \text{onehot}(\text{ids})\, W$, so by section 2
#
# $$dW = \text{onehot}(\text{ids})^\top G, \qquad dW_v = \sum_{n:\ \text{ids}_n = v} G_n.$$
#
# Row $v$ collects the gradients of **every** position that looked it up, summed. Rows never looked up get zero.
# In a Decision Transformer, repeats are the rule, not the exception: every sequence in a batch starting at
# timestep 0 looks up `embed_timestep` row 0, and GPT-2's position ids are all zero (tutorial 06), so one row of
# `wpe` receives the sum over *every* token. (`embedding_forward` and `embedding_backward` are assignment 5's: their
# code is after the exercises.)
#
# ### The naive backward, and why it is wrong
#
# The obvious NumPy line is `dW[ids] += G`. It is wrong whenever an id repeats: fancy-index `+=` is evaluated as
# `dW[ids] = dW[ids] + G`: the right-hand side gathers one *copy* of each row per occurrence, and the assignment
# writes those copies back in turn, so the last occurrence of each id overwrites the others. No error, no warning.
# CuPy does no better (with repeated indices, which value it stores is unspecified). The correct kernel is an
# unbuffered scatter-add, `np.add.at(dW, ids, G)` on NumPy, `cupyx.scatter_add` on CuPy; the Array API has none,
# so it is one of the four kernels in `backend.py`:

# %%
print(inspect.getsource(scatter_add))

V, C = (6, 3) if SMOKE else (12, 8)
n_lookups = 10 if SMOKE else 40
# the last row is never looked up
ids = rng.integers(0, V - 1, size=(2, n_lookups // 2))
W = rng.standard_normal((V, C))
G = rng.standard_normal((*ids.shape, C))
out, cache = embedding_forward(ids, W)
dW = embedding_backward(G, cache)

dW_naive = np.zeros_like(W)
dW_naive[ids.reshape(-1)] += G.reshape(-1, C)  # the bug

dW_num = numerical_grad(lambda: np.sum(embedding_forward(ids, W)[0] * G), W)
err, err_naive = rel_error(dW, dW_num), rel_error(dW_naive, dW_num)
counts = np.bincount(ids.reshape(-1), minlength=V)
print("lookups per row:", counts)
print(f"scatter-add backward vs finite differences: {err:.1e}")
print(f"naive dW[ids] += G   vs finite differences: {err_naive:.1e}")
wrong_rows = np.flatnonzero(np.any(np.abs(dW_naive - dW_num) > 1e-6, axis=1))
print("rows the naive version gets wrong:", wrong_rows,
      "= the rows looked up more than once:",
      np.flatnonzero(counts > 1))
assert err < 1e-8, err
assert err_naive > 1e-2, err_naive
assert np.array_equal(wrong_rows, np.flatnonzero(counts > 1))
assert np.all(dW[counts == 0] == 0)

# %% [markdown]
# Plot one column of the gradient: where a row was looked up once, the naive version agrees; where it was looked up
# $k > 1$ times, it keeps one of the $k$ terms of the sum.

# %%
fig, ax = plt.subplots(figsize=(8, 4))
rows = np.arange(V)
ax.bar(rows - 0.2, dW[:, 0], width=0.4, label="scatter-add (np.add.at)")
ax.bar(rows + 0.2, dW_naive[:, 0], width=0.4, label="naive dW[ids] += G")
ax.plot(rows, dW_num[:, 0], "k_", markersize=18, mew=2, label="finite differences")
ax.axhline(0, color="gray", lw=0.5)
ax.set_xticks(rows, [f"{v}\n(x{counts[v]})" for v in rows])
ax.set_xlabel("embedding row v  (xk: looked up k times)")
ax.set_ylabel("dW[v, 0]")
ax.set_title("Embedding backward with repeated ids")
ax.legend()
fig.tight_layout()
show(fig, FIGURES / "02_embedding_backward.png")

# %% [markdown]
# The same backward on the strict backend. There the naive line is not even allowed: the Array API standard
# restricts integer-array indexing (it may not be mixed with slices) and specifies no scatter, so array_api_strict
# rejects the fancy-index form outright. A second reason the kernel lives in `backend.py`.

# %%
strict = get_backend("strict")
_, cache_s = embedding_forward(strict.asarray(ids), strict.asarray(W))
dW_s = embedding_backward(strict.asarray(G), cache_s)
err_s = rel_error(to_numpy(dW_s), dW_num)
print(f"strict backend scatter-add vs finite differences: {err_s:.1e}")
assert err_s < 1e-8, err_s
try:
    dW_try = strict.zeros((V, C), "float64")
    dW_try[strict.asarray(ids.reshape(-1)), :] += strict.asarray(G.reshape(-1, C))
except IndexError as e:
    print("naive scatter on strict -> IndexError:", str(e)[:100])
else:
    raise AssertionError("the strict backend accepted a fancy-index scatter")

if torch is not None:
    Wt = torch.tensor(W, requires_grad=True)
    out_t = torch.nn.functional.embedding(torch.tensor(ids), Wt)
    (out_t * torch.tensor(G)).sum().backward()
    terr = rel_error(dW, Wt.grad.numpy())
    print(f"embedding backward vs PyTorch: {terr:.1e}")
    assert terr < 1e-12, terr

# %% [markdown]
# **Summary.** Conv1D stores $(I, O)$ and computes $XW + b$; nn.Linear stores $(O, I)$ and computes $XW^\top + b$;
# their backward passes are three matrix products, with sums over every row that shared the weights. An embedding's
# backward is a scatter-**add**: repeated ids must accumulate, and `dW[ids] += G` silently does not.

# %% [markdown]
# **Graded.** `minidt assignment start linear_activations DIR` asks for `conv1d_forward` / `conv1d_backward` and
# `linear_forward` / `linear_backward` (with the activations of tutorial 03); `minidt assignment start dt_embedding
# DIR` for `embedding_forward` / `embedding_backward` (with the Decision Transformer's token embedding of tutorial
# 06). `minidt grade DIR/NAME.py` checks them as this tutorial does, on inputs drawn by hypothesis.
#
# ## Exercises
#
# **1. Predict, then run.** Every one of $n$ lookups reads row 0 (`ids` all zero, as `wpe` is read in a Decision
# Transformer). What are `dW[0]` for the scatter-add and for the naive `dW[ids] += G`?
#
# **2. Plant a bug, watch the check catch it.** Give Conv1D the backward of `nn.Linear`, `dW = G.T @ X`. With
# $I \ne O$ the shape is wrong and something fails at once; with $I = O$ the shapes fit. Which check catches it
# then?
#
# **3. Derive before the reveal.** In the one-hot view, $\text{out} = \text{onehot}(\text{ids})\,W$. What is the
# $V\times V$ matrix $\text{onehot}(\text{ids})^\top\,\text{onehot}(\text{ids})$, and what does it say about the
# embedding's gradient?
#
# ### Solutions
#
# Each solution is one cell, collapsed in the book; in the script, everything below this line is the solutions.

# %% tags=["hide-cell"]
# Solution 1: the scatter-add gives the sum of all n gradients, the naive version only
# the last one.
n = 6
ids0 = np.zeros(n, dtype=np.int64)
G0 = rng.standard_normal((n, C))
dW_add = embedding_backward(G0, embedding_forward(ids0, W)[1])
dW_last = np.zeros_like(W)
dW_last[ids0] += G0
print("scatter-add dW[0] == G.sum(0):", np.allclose(dW_add[0], G0.sum(0)),
      "| naive dW[0] == G[-1]:",
      np.allclose(dW_last[0], G0[-1]))
assert np.allclose(dW_add[0], G0.sum(0)) and np.allclose(dW_last[0], G0[-1])

# %% tags=["hide-cell"]
# Solution 2: the finite-difference check (and PyTorch): with I = O, G.T @ X is (O, I) =
# (I, O) but it is the transpose of the right gradient X.T @ G, an O(1) error.
I = O = 4
Xs, Gs, Ws, bs = (rng.standard_normal(s) for s in ((3, I), (3, O), (I, O), (O,)))
dW_wrong = Gs.T @ Xs
dW_fd = numerical_grad(lambda: np.sum(conv1d_forward(Xs, Ws, bs)[0] * Gs), Ws)
err_wrong = rel_error(dW_wrong, dW_fd)
print(f"Conv1D with Linear's dW formula: relative error {err_wrong:.1e}")
assert err_wrong > 0.1, err_wrong

# %% [markdown]
# :::{dropdown} Solution 3
# Entry $(u, v)$ of $\text{onehot}^\top\text{onehot}$ counts the positions $n$ with $\text{ids}_n = u$ and
# $\text{ids}_n = v$: zero unless $u = v$, so it is $\operatorname{diag}(\text{counts})$, the number of lookups of
# each row. So $dW = \text{onehot}^\top G$ adds up $k$ gradient rows for a row looked up $k$ times and none for a
# row never looked up (the `(x0)` bars of the figure), and a scatter-add is exactly this product without building
# the one-hot matrix. Check it:
#
# ```python
# onehot = np.eye(V)[ids.reshape(-1)]
# assert np.array_equal(onehot.T @ onehot, np.diag(counts))
# ```
# :::

# %% [markdown]
# #### After you have done assignment 1
#
# `conv1d_forward`, `conv1d_backward`, `linear_forward` and `linear_backward` as minidt ships them: the reference
# solution of assignment 1 (`minidt assignment start linear_activations DIR`). Collapsed in the book: read it once
# your own passes `minidt grade`.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the code (after assignment 1)"}
for fn in (conv1d_forward, conv1d_backward, linear_forward, linear_backward):
    print(inspect.getsource(fn))

# %% [markdown]
# #### After you have done assignment 5
#
# `embedding_forward` and `embedding_backward` as minidt ships them: the reference solution of assignment 5 (`minidt
# assignment start dt_embedding DIR`). Collapsed in the book: read it once your own passes `minidt grade`.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the code (after assignment 5)"}
print(inspect.getsource(embedding_forward))
print(inspect.getsource(embedding_backward))
