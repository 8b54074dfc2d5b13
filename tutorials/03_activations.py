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
# # 03 · Activations and their derivatives
#
# *Full size: about 9 s on 2 idle CPU cores; `MINIDT_SMOKE=1`: seconds.*
#
# GPT-2's MLP is `c_proj(act(c_fc(x)))`, and the config's `activation_function` names `act`. The Decision
# Transformer's code default is `"relu"` (its docstring says `"gelu"`: minidt follows the code), and its action head
# ends in `tanh`. An activation acts entrywise, so its backward is entrywise too:
#
# $$y_i = f(x_i) \quad\Rightarrow\quad \frac{\partial L}{\partial x_i} = \frac{\partial L}{\partial y_i}\, f'(x_i),
# \qquad \texttt{dx = dout * f'(x)}.$$
#
# The whole job is $f'$, and choosing what to cache so $f'$ is cheap.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the set-up"}
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np

from minidt.backend import get_backend, to_numpy
from minidt.layers.activations import ACTIVATIONS
from minidt.gradcheck import rel_error  # tutorial 01 derives them
from minidt.plots import figure_dir, show

SMOKE = os.environ.get("MINIDT_SMOKE") == "1"
# figures/ beside this file, or $MINIDT_FIGURES
FIGURES = figure_dir(globals().get("__file__"))


try:
    import torch
except ImportError:
    torch = None
    print("torch not installed: skipping the PyTorch comparison")

# %% [markdown]
# ## The five activations
#
# Let $\sigma(x) = 1/(1+e^{-x})$, $\Phi$ the standard normal CDF, $\varphi$ its density, $c = \sqrt{2/\pi}$.
#
# **ReLU** $f(x) = \max(x, 0)$, $f'(x) = [x > 0]$. Not differentiable at 0; like PyTorch we use $f'(0) = 0$.
# The cache is the output: $[y > 0] = [x > 0]$.
#
# **SiLU** (swish) $f(x) = x\,\sigma(x)$. With $\sigma' = \sigma(1-\sigma)$ and the product rule,
# $f'(x) = \sigma + x\sigma(1-\sigma) = \sigma\,(1 + x(1-\sigma))$.
#
# **GELU** ("gelu", the exact form) $f(x) = x\,\Phi(x) = \tfrac{x}{2}\left(1 + \operatorname{erf}(x/\sqrt2)\right)$.
# Product rule with $\Phi' = \varphi$: $f'(x) = \Phi(x) + x\,\varphi(x)$, $\varphi(x) = e^{-x^2/2}/\sqrt{2\pi}$.
# The Array API has no `erf`, so it is one of minidt's backend kernels.
#
# **GELU, tanh approximation** ("gelu_new", the original GPT-2's) $f(x) = \tfrac{x}{2}(1 + \tanh u)$,
# $u = c\,(x + 0.044715\,x^3)$. With $t = \tanh u$ and $\tanh' = 1 - \tanh^2$:
#
# $$f'(x) = \tfrac12(1 + t) + \tfrac{x}{2}(1 - t^2)\, c\,(1 + 3\cdot 0.044715\, x^2).$$
#
# **tanh** $f'(x) = 1 - \tanh^2 x$: cheapest in terms of the *output*, so the cache is $y$, not $x$.
#
# In minidt each is a forward/backward pair; the forward returns `(out, cache)`, the cache being $x$ or $y$ as
# above (assignment 1 asks for all five pairs: minidt's code is after the exercises).
#
# ## Plotted
#
# The derivative of each is what backward multiplies by. Note where they differ: ReLU's is a step (no gradient at
# all for $x<0$); SiLU's and GELU's dip below zero for negative $x$ (they are not monotone) and overshoot 1 for
# positive $x$; tanh's is a bump that vanishes for large $|x|$ (saturation).

# %%
n = 201 if SMOKE else 2001
x = np.linspace(-4.0, 4.0, n) + 1e-3  # offset: no grid point sits on ReLU's kink at 0
derivs = {}
fig_f, ax_f = plt.subplots(figsize=(7, 4.5))
fig_d, ax_d = plt.subplots(figsize=(7, 4.5))
for name, (fwd, bwd) in ACTIVATIONS.items():
    y, cache = fwd(x)
    derivs[name] = bwd(np.ones_like(x), cache)  # dout = 1 gives f'(x) itself
    style = "--" if name == "gelu_new" else "-"  # dashed: it lies almost on top of gelu
    ax_f.plot(x, y, style, label=name)
    ax_d.plot(x, derivs[name], style, label=name)
for ax, title, fig, fname in ((ax_f, "activations f(x)", fig_f, "03_activations.png"),
                              (ax_d, "derivatives f'(x)", fig_d,
                               "03_activation_derivatives.png")):
    ax.axhline(0, color="gray", lw=0.5)
    ax.axvline(0, color="gray", lw=0.5)
    ax.set_xlabel("x")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    show(fig, FIGURES / fname)

for name in ("silu", "gelu", "gelu_new"):
    i = np.argmin(derivs[name])
    print(f"{name:9s} min f'(x) = {derivs[name][i]:+.3f} at x = {x[i]:+.2f};  max "
          f"f'(x) = {derivs[name].max():.3f}")

# %% [markdown]
# ## Checked against finite differences
#
# An entrywise function's Jacobian is diagonal, so one vectorized central difference
# $\big(f(x+h) - f(x-h)\big)/2h$ checks every point of the grid at once ($h = 10^{-6}$, float64).

# %%
h = 1e-6
for name, (fwd, bwd) in ACTIVATIONS.items():
    fd = (fwd(x + h)[0] - fwd(x - h)[0]) / (2 * h)
    err = rel_error(derivs[name], fd)
    print(f"{name:9s} backward vs finite differences: {err:.1e}")
    assert err < 1e-8, (name, err)

# %% [markdown]
# A derivative with a typo looks plausible on a plot and fails the check at once. Drop the $3$ from $3x^2$ in
# gelu_new's $du/dx$:

# %%
xx = x * x
t = np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * xx * x))
buggy = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * np.sqrt(2 / np.pi) * (1 + 0.044715 * xx)
fwd = ACTIVATIONS["gelu_new"][0]
err_bug = rel_error(buggy, (fwd(x + h)[0] - fwd(x - h)[0]) / (2 * h))
print(f"gelu_new with the 3 dropped: {err_bug:.1e}")
assert err_bug > 1e-3, err_bug

# %% [markdown]
# ## gelu vs gelu_new: close, not equal
#
# The tanh form approximates the erf form to about $5\times10^{-4}$. That is far above float64 round-off, so a model
# configured with `"gelu"` and run with `"gelu_new"` (or the reverse) fails a parity test: the name matters.

# %%
gap = np.max(np.abs(ACTIVATIONS["gelu"][0](x)[0] - ACTIVATIONS["gelu_new"][0](x)[0]))
print(f"max |gelu - gelu_new| on [-4, 4]: {gap:.1e}")
assert 1e-4 < gap < 1e-3, gap

# %% [markdown]
# ## Checked against PyTorch
#
# PyTorch's `F.gelu(x)` is the erf form and `F.gelu(x, approximate="tanh")` the tanh form, matching transformers'
# `"gelu"` and `"gelu_new"`. We compare the outputs and the gradients autograd computes.

# %%
if torch is not None:
    F = torch.nn.functional
    reference = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu,
                 "gelu_new": lambda v: F.gelu(v, approximate="tanh"),
                 "tanh": torch.tanh}
    dout = np.random.default_rng(0).standard_normal(x.shape)
    for name, (fwd, bwd) in ACTIVATIONS.items():
        xt = torch.tensor(x, requires_grad=True)
        yt = reference[name](xt)
        (yt * torch.tensor(dout)).sum().backward()
        y, cache = fwd(x)
        e_fwd = rel_error(y, yt.detach().numpy())
        e_bwd = rel_error(bwd(dout, cache), xt.grad.numpy())
        print(f"{name:9s} vs PyTorch: forward {e_fwd:.1e}  backward {e_bwd:.1e}")
        assert e_fwd < 1e-14 and e_bwd < 1e-14, (name, e_fwd, e_bwd)

# %% [markdown]
# ## On the strict backend
#
# The same functions on array_api_strict: `gelu` reaches `erf` through `minidt.backend.erf`, the only
# non-standard call among them.

# %%
strict = get_backend("strict")
xs = strict.asarray(x)
for name, (fwd, bwd) in ACTIVATIONS.items():
    y, cache = fwd(xs)
    err = rel_error(to_numpy(bwd(strict.asarray(np.ones_like(x)), cache)), derivs[name])
    assert err < 1e-15, (name, err)
print("all five activations: identical derivatives on the strict backend")

# %% [markdown]
# ## Dropout: an entrywise layer with a random mask
#
# Dropout (GPT-2's `attn_pdrop`, `resid_pdrop`, `embd_pdrop`; 0.1 in the Decision Transformer) is entrywise too.
# In training it draws a mask $m_i \in \{0, 1\}$ with $P(m_i = 1) = 1 - p$ and computes
#
# $$y_i = \frac{m_i\, x_i}{1 - p}, \qquad \mathbb{E}[y_i] = \frac{(1-p)\, x_i}{1-p} = x_i .$$
#
# The $1/(1-p)$ ("inverted" dropout) keeps every activation's expected value unchanged, so the network trained
# with dropout is used without it in evaluation (`model.eval()`), with no rescaling at test time. For a fixed
# mask, $y$ is linear in $x$ with the diagonal Jacobian $m / (1-p)$, so
#
# $$\frac{\partial L}{\partial x_i} = \frac{\partial L}{\partial y_i}\,\frac{m_i}{1-p}, \qquad
#   \texttt{dx = dout * mask}\quad(\text{the cache is the scaled mask } m/(1-p)).$$
#
# Two checks: the backward against finite differences *with the mask held fixed* (a finite difference of a
# function that redraws its mask at every call measures noise), and the expectation, over many masks.

# %%
from minidt.backend import Generator
from minidt.layers.dropout import dropout_backward, dropout_forward

p_drop = 0.1
xd = np.random.default_rng(1).standard_normal((4, 8))
dout_d = np.random.default_rng(2).standard_normal((4, 8))
yd, mask = dropout_forward(xd, p_drop, Generator(0))
print("mask values:", np.unique(mask), f"(0 and 1/(1-p) = {1 / (1 - p_drop):.4f})")
dx_d = dropout_backward(dout_d, mask)
dx_fd = np.zeros_like(xd)
# central differences of y = x * mask, the mask held fixed
for i in np.ndindex(xd.shape):
    e = np.zeros_like(xd)
    e[i] = 1e-6
    dx_fd[i] = (np.sum((xd + e) * mask * dout_d)
                - np.sum((xd - e) * mask * dout_d)) / 2e-6
err_d = rel_error(dx_d, dx_fd)
print(f"dropout backward vs finite differences (fixed mask): {err_d:.1e}")
assert err_d < 1e-8, err_d

n_masks = 2_000 if SMOKE else 20_000
ones = np.ones((n_masks, 16))
mean_y = dropout_forward(ones, p_drop, Generator(3))[0].mean()
print(f"mean of y over {n_masks * 16} dropped-out ones: {mean_y:.4f} "
      "(expected 1; without the 1/(1-p): "
      f"{mean_y * (1 - p_drop):.4f})")
# 5 standard errors
assert abs(mean_y - 1.0) < 5 * np.sqrt(p_drop / (1 - p_drop) / ones.size), mean_y

# %% [markdown]
# **Summary.** Entrywise layers have entrywise backward passes: `dx = dout * f'(x)`. Derive $f'$ by the chain and
# product rules, cache whichever of $x$ or $y$ makes it cheapest, and check it: one vectorized central difference
# covers a whole grid.

# %% [markdown]
# **Graded.** `minidt assignment start linear_activations DIR` asks for every activation here, forward and backward
# (with tutorial 02's linear layers); `minidt grade DIR/linear_activations.py` checks them.
#
# ## Exercises
#
# **1. Predict, then run.** SiLU's derivative dips below zero. Guess where it is smallest and how negative it gets
# (look at the formula $\sigma(1 + x(1 - \sigma))$: where does $1 + x(1-\sigma)$ vanish?), then read it off.
#
# **2. Plant a bug, watch the check catch it.** Drop the $x\,\varphi(x)$ term from GELU's derivative, keeping only
# $\Phi(x)$. Where on the grid is the error largest, and does the check notice?
#
# **3. Derive before the reveal.** ReLU and tanh cache their *output*; GELU caches its input. Why can GELU not
# cache its output instead?
#
# ### Solutions
#
# Each solution is one cell, collapsed in the book; in the script, everything below this line is the solutions.

# %% tags=["hide-cell"]
# Solution 1: f'(x) < 0 where 1 + x (1 - sigma(x)) < 0, i.e. x below about -1.28; the
# minimum is near x = -2.4, about -0.1.
i = np.argmin(derivs["silu"])
print(f"silu: min f'(x) = {derivs['silu'][i]:.4f} at x = {x[i]:.3f}")
assert -2.6 < x[i] < -2.2 and -0.11 < derivs["silu"][i] < -0.09

# %% tags=["hide-cell"]
# Solution 2: the missing term x phi(x) is largest near |x| = 1 (where x phi(x) peaks at
# 0.24), and the check reports an O(1) relative error.
from scipy.stats import norm

gelu_bug = norm.cdf(x)  # Phi(x) alone
err_gelu = rel_error(gelu_bug, derivs["gelu"])
print(f"gelu derivative without x*phi(x): relative error {err_gelu:.1e}; largest error "
      "at x = "
      f"{x[np.argmax(np.abs(gelu_bug - derivs['gelu']))]:+.2f}")
assert err_gelu > 0.1, err_gelu

# %% [markdown]
# :::{dropdown} Solution 3
# A cache must let backward recover $f'(x)$. ReLU's $[x > 0] = [y > 0]$ and tanh's $1 - y^2$ are functions of the
# output. GELU is not monotone (it dips to about $-0.17$ near $x = -0.75$ and comes back to 0), so one output value
# comes from two inputs with different derivatives: $y$ alone does not determine $f'(x)$.
# :::

# %% [markdown]
# #### After you have done assignment 1
#
# The five activations' forward and backward as minidt ships them: the reference solution of assignment 1 (`minidt
# assignment start linear_activations DIR`). Collapsed in the book: read it once your own passes `minidt grade`.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the code (after assignment 1)"}
for name, (fwd, bwd) in ACTIVATIONS.items():
    print(inspect.getsource(fwd))
    print(inspect.getsource(bwd))
