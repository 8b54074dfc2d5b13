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
# # 01 · Arrays, backends, and gradient checking
#
# *Full size: about 4 s on 2 idle CPU cores; `MINIDT_SMOKE=1`: seconds.*
#
# minidt has no autograd. Every layer is a pair of functions, `*_forward` and `*_backward`, and the backward
# pass is written by hand. Two questions come before any layer:
#
# 1. **Which array library runs the math?** NumPy on a CPU, CuPy on a GPU, and a third, deliberately fussy one
#    (`strict`) that exists only to prove the code would run on a GPU without one.
# 2. **How do we know a hand-written backward pass is right?** By comparing it with a derivative computed from the
#    forward pass alone: central finite differences in float64.
#
# Run as a script (`python tutorials/01_arrays_and_backends.py`) or open as a notebook (jupytext): figures show
# under their cells in a notebook and are saved as PNG files in `figures/` beside the tutorial either way
# (`$MINIDT_FIGURES` overrides). `MINIDT_SMOKE=1` runs tiny sizes. Every tutorial ends with exercises.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the set-up"}
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np
import scipy.special

from minidt.backend import array_namespace, get_backend, to_numpy
from minidt.layers.activations import tanh_backward, tanh_forward
from minidt.layers.layernorm import layernorm_forward
from minidt.plots import figure_dir, show

SMOKE = os.environ.get("MINIDT_SMOKE") == "1"
# figures/ beside this file, or $MINIDT_FIGURES
FIGURES = figure_dir(globals().get("__file__"))
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. One code path, many array libraries
#
# NumPy 2 and CuPy both implement the [Array API standard](https://data-apis.org/array-api/): the same function
# names (`exp`, `sum`, `matmul`, `reshape`, ...) with the same semantics. Model code therefore never writes `np.`;
# it asks its *input* which library it belongs to and uses that namespace, `xp`:
#
# ```python
# xp = array_namespace(x)  # numpy for a NumPy array, CuPy's namespace for a CuPy array...
# e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
# ```
#
# This is what SciPy and scikit-learn do (via `array-api-compat`). Here is minidt's `array_namespace`:

# %%
print(inspect.getsource(array_namespace))


# %% [markdown]
# A function written this way runs unchanged on any backend. A softmax, for example:

# %%
def softmax(x):
    xp = array_namespace(x)
    # subtract the row max so exp never overflows
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


x_host = rng.standard_normal((2, 5))
numpy_backend, strict = get_backend("numpy"), get_backend("strict")
y_numpy = softmax(numpy_backend.asarray(x_host))
y_strict = softmax(strict.asarray(x_host))
print("strict array:", type(y_strict).__module__, "on", y_strict.device)
diff = np.max(np.abs(to_numpy(y_strict) - y_numpy))
print(f"max |numpy - strict| = {diff:.1e}")
# array_api_strict computes with NumPy underneath: identical numbers
assert diff < 1e-15, diff

# %% [markdown]
# ## 2. The strict backend: a GPU stand-in that fails loudly
#
# CI machines have no GPU, so how do we know the CuPy path works? The `strict` backend uses
# [array_api_strict](https://data-apis.org/array-api-strict/), a library that implements *only* the standard, and
# places its arrays on a non-default device (`device1`). It then rejects the mistakes that break a CuPy run, and more:
#
# | mistake | on CuPy | on strict |
# |---|---|---|
# | a host-only library on a device array (`scipy.special.erf(x)`, `np.asarray(x)`) | `TypeError`: implicit conversion to a NumPy array is not allowed | `RuntimeError`: can't convert a device1 array to NumPy |
# | mixing with a host NumPy array (`x + np.ones(5)`) | `TypeError` | `TypeError` |
# | creating an array without `device=` and combining it | lands on the *current* GPU: right by luck with one GPU, wrong with several | `ValueError`: arrays from two different devices |
# | NumPy spellings outside the standard (`np.exp(x)`, `x.sum()`, `dW[ids] += g`) | mostly work (CuPy dispatches NumPy calls to itself) | `RuntimeError` / `AttributeError` / `IndexError` |
#
# The last row shows strict is *stricter* than CuPy: code that passes strict uses nothing beyond the standard,
# so it runs on CuPy (and on any other conforming library). Watch each mistake fail:

# %%
x = strict.asarray(x_host)  # explicit host -> device transfer
mistakes = {
    "scipy.special.erf(x)": lambda: scipy.special.erf(x),
    "np.exp(x)": lambda: np.exp(x),
    "x + np.ones(5)": lambda: x + np.ones(5),
    "x + xp.ones(5)  (no device=)": lambda: x + strict.xp.ones(5),
    "x.sum()": lambda: x.sum(),
}
for what, attempt in mistakes.items():
    try:
        attempt()
    except (RuntimeError, TypeError, ValueError, AttributeError) as e:
        print(f"{what:30s} -> {type(e).__name__}: {str(e)[:90]}")
    else:
        raise AssertionError(f"the strict backend accepted {what}")

# %% [markdown]
# The right way is always explicit: create arrays *next to* an existing one (`device=device(x)`), and cross between
# host and device only through `Backend.asarray` (host -> device) and `to_numpy` (device -> host):

# %%
ok = x + strict.xp.ones(5, dtype=x.dtype, device=x.device)
print("with device=:", type(ok).__name__, ok.device, "| back on the host:",
      type(to_numpy(ok)).__name__)

# %% [markdown]
# The Array API lacks a few things a transformer needs: `erf` (the exact GELU), scatter-add (the embedding's
# backward), seeded random numbers, and host/device transfer. Those, and only those, live in `minidt/backend.py`,
# once per backend. Everything else, every layer, is backend-agnostic. A minidt layer on the strict backend:

# %%
C = 8
xs = rng.standard_normal((3, C))
w, b = 1 + 0.1 * rng.standard_normal(C), 0.1 * rng.standard_normal(C)
out_np, _ = layernorm_forward(xs, w, b, 1e-5)
out_strict, _ = layernorm_forward(strict.asarray(xs), strict.asarray(w),
                                  strict.asarray(b), 1e-5)
diff = np.max(np.abs(to_numpy(out_strict) - out_np))
print(f"layernorm_forward, numpy vs strict: max diff {diff:.1e}")
assert diff < 1e-14, diff

# %% [markdown]
# **CuPy.** With a CUDA GPU and `pip install 'minidt[gpu-cuda12]'` (or `[gpu-cuda13]`), `get_backend("cupy")`
# gives the real thing. Without one, it says what is missing. (What strict cannot prove: the CuPy branches of the four kernels in `backend.py`,
# and speed. Tutorial 11 runs the whole model on whichever is available.)

# %%
try:
    cupy_backend = get_backend("cupy")
except RuntimeError as e:
    print("no CuPy here:", e)
else:
    y_gpu = softmax(cupy_backend.asarray(x_host))
    diff = np.max(np.abs(to_numpy(y_gpu) - y_numpy))
    print(f"CuPy works: max |numpy - cupy| = {diff:.1e}")
    assert diff < 1e-12, diff

# %% [markdown]
# ## 3. Gradient checking by finite differences
#
# For a scalar loss $L(x)$, Taylor's theorem gives
#
# $$L(x + h) = L(x) + h L'(x) + \tfrac{h^2}{2} L''(x) + \tfrac{h^3}{6} L'''(x) + O(h^4).$$
#
# * The **forward** difference $\frac{L(x+h) - L(x)}{h} = L'(x) + \tfrac{h}{2}L''(x) + \dots$ has truncation error
#   $O(h)$.
# * The **central** difference $\frac{L(x+h) - L(x-h)}{2h} = L'(x) + \tfrac{h^2}{6}L'''(x) + \dots$: the even terms
#   cancel, so the error is $O(h^2)$. Same cost per entry (two evaluations), far more accurate: always use it.
#
# Truncation wants a small $h$; round-off wants a large one. Each evaluation of $L$ carries a relative error of
# about the machine epsilon $\varepsilon$, which the division by $h$ amplifies to $\approx \varepsilon |L| / h$.
# The total for the central difference, $\approx h^2 |L'''| / 6 + \varepsilon |L| / h$, is smallest near
# $h \approx \varepsilon^{1/3}$:
#
# | dtype | $\varepsilon$ | best $h$ (central) | best error |
# |---|---|---|---|
# | float64 | $2.2\times10^{-16}$ | $\approx 10^{-5}$ | $\approx 10^{-11}$ |
# | float32 | $1.2\times10^{-7}$ | $\approx 5\times10^{-3}$ | $\approx 10^{-5}$ |
#
# float32 cannot tell a correct gradient from one that is off by $10^{-5}$, so gradient checks run in **float64**,
# with $h = 10^{-6}$. Let's measure it on $L(x) = \sum_i \sin(x_i) e^{x_i}$, whose derivative we know exactly:

# %%
def L(x):
    return np.sum(np.sin(x) * np.exp(x))


def dL(x):
    return (np.cos(x) + np.sin(x)) * np.exp(x)


x0 = np.array([0.7])
hs = np.logspace(-13, -0.5, 40 if SMOKE else 120)
errors = {}
for dtype in (np.float64, np.float32):
    xd = x0.astype(dtype)
    exact = dL(x0)[0]
    fwd, cen = [], []
    for h in hs:
        h_d = dtype(h)
        fwd.append(abs(float((L(xd + h_d) - L(xd)) / h_d) - exact))
        cen.append(abs(float((L(xd + h_d) - L(xd - h_d)) / (2 * h_d)) - exact))
    errors[np.dtype(dtype).name] = (np.array(fwd), np.array(cen))

fig, ax = plt.subplots(figsize=(7, 4.5))
for (name, (fwd, cen)), color in zip(errors.items(), ("C0", "C3")):
    ax.loglog(hs, np.maximum(fwd, 1e-17), "--", color=color, label=f"forward, {name}")
    ax.loglog(hs, np.maximum(cen, 1e-17), "-", color=color, label=f"central, {name}")
ax.set_xlabel("step h")
ax.set_ylabel("|finite difference - exact derivative|")
ax.set_title("Truncation (right) vs round-off (left): the V of finite differences")
ax.legend()
fig.tight_layout()
show(fig, FIGURES / "01_finite_difference_error.png")

for name, (fwd, cen) in errors.items():
    i, j = np.argmin(fwd), np.argmin(cen)
    print(f"{name}: forward best error {fwd[i]:.1e} at h={hs[i]:.0e};  central best "
          f"error {cen[j]:.1e} "
          f"at h={hs[j]:.0e}")
best64 = errors["float64"][1].min()
assert best64 < 1e-9, best64
# float32 is hopeless for checking gradients
assert errors["float32"][1].min() > 1e3 * best64

# %% [markdown]
# ### Checking an array-valued layer: the "fake loss"
#
# A layer maps an array to an array, $y = f(x)$; its backward maps $\partial L/\partial y$ (`dout`) to
# $\partial L/\partial x$. To check it with a scalar finite difference, invent the loss
# $L = \sum y \odot \text{dout}$ with a **random** fixed `dout`: then $\partial L/\partial y = \text{dout}$ exactly,
# and `backward(dout)` must equal the numerical gradient of $L$. (A random `dout`, not ones: `sum(y)` has symmetries
# that hide bugs; tutorial 4 shows one.)
#
# Then compare with **one relative error** per array, $\max|a - b| / \max|b|$. An element-wise relative error
# $|a_i - b_i| / |b_i|$ explodes on entries that are legitimately near zero, and an absolute error means nothing
# without knowing the scale. With float64 and $h = 10^{-6}$, a correct backward pass gives $10^{-10}$ to $10^{-8}$
# (more for bigger arrays: the round-off in $L$, a sum over all of them, is what the division by $2h$ amplifies);
# a wrong one gives something of order $10^{-2}$ to $1$. There is rarely a grey zone.

# %%
# the two functions as minidt ships them
from minidt.gradcheck import numerical_grad, rel_error

print(inspect.getsource(numerical_grad))
print(inspect.getsource(rel_error))

# tanh_forward / tanh_backward: y = tanh(x), dx = dout * (1 - y^2) with y the cache
# (assignment 1 asks for the code: it is after the exercises)
shape = (3, 4) if SMOKE else (16, 32)
x = rng.standard_normal(shape)  # float64
dout = rng.standard_normal(shape)
out, cache = tanh_forward(x)
dx = tanh_backward(dout, cache)
dx_num = numerical_grad(lambda: np.sum(tanh_forward(x)[0] * dout), x)
err = rel_error(dx, dx_num)
print(f"tanh backward vs central differences: relative error {err:.1e}")
assert err < 1e-8, err

# %% [markdown]
# And a planted bug, to see what "wrong" looks like: forget the square in $1 - \tanh^2$.

# %%
dx_bug = dout * (1.0 - cache)
err_bug = rel_error(dx_bug, dx_num)
print(f"buggy backward: relative error {err_bug:.1e}")
assert err_bug > 1e-2, err_bug

# %% [markdown]
# The same check, on the strict backend: the backward pass is backend code too.

# %%
out_s, cache_s = tanh_forward(strict.asarray(x))
dx_s = tanh_backward(strict.asarray(dout), cache_s)
err_s = rel_error(to_numpy(dx_s), dx_num)
print(f"tanh backward on strict vs central differences: {err_s:.1e}")
assert err_s < 1e-8, err_s

# %% [markdown]
# **Summary.** Write model code against `xp = array_namespace(x)`; cross host/device only explicitly; let the strict
# backend catch what would break on a GPU. Check every backward pass with central differences in float64
# ($h = 10^{-6}$), through a fake loss with a random `dout`, and one relative error per array. The next tutorials do
# exactly this for every layer of the Decision Transformer.

# %% [markdown]
# ## Exercises
#
# **1. Predict, then run.** At $h = 10^{-3}$ in float64, how large are the errors of the forward and of the central
# difference on $L(x) = \sum \sin(x) e^x$ at $x = 0.7$? Use the first Taylor term of each error
# ($\tfrac h2 L''$ and $\tfrac{h^2}{6} L'''$, with $L'' = 2\cos x\, e^x$ and $L''' = 2(\cos x - \sin x)e^x$), write
# the two numbers down, then run the solution.
#
# **2. Plant a bug, watch the check catch it.** Write a tanh backward that uses the *input* where it needs the
# output, `dout * (1 - x**2)`. What relative error will the gradient check print: $10^{-8}$, $10^{-3}$ or
# order 1?
#
# **3. Derive before the reveal.** For the *forward* difference the total error is about
# $\tfrac h2 |L''| + \varepsilon |L| / h$. Which $h$ minimizes it, and how small is the error there, in float64?
# Compare with the figure's dashed blue line.
#
# ### Solutions
#
# Each solution is one cell, collapsed in the book; in the script, everything below this line is the solutions.

# %% tags=["hide-cell"]
# Solution 1: the leading Taylor terms predict both errors to a few percent.
x1, h1 = np.array([0.7]), 1e-3
predicted = (h1 / 2 * abs(2 * np.cos(x1[0]) * np.exp(x1[0])),
             h1**2 / 6 * abs(2 * (np.cos(x1[0]) - np.sin(x1[0])) * np.exp(x1[0])))
measured = (abs((L(x1 + h1) - L(x1)) / h1 - dL(x1)[0]),
            abs((L(x1 + h1) - L(x1 - h1)) / (2 * h1) - dL(x1)[0]))
for name, guess, seen in zip(("forward", "central"), predicted, measured):
    print(f"{name}: predicted {guess:.2e}, measured {seen:.2e}")
    assert 0.5 < seen / guess < 2, (name, guess, seen)

# %% tags=["hide-cell"]
# Solution 2: order 1. Away from 0, 1 - x^2 and 1 - tanh(x)^2 are different functions
# (of opposite signs for |x| > 1), so the error is as large as the gradient itself.
err_input = rel_error(dout * (1.0 - x**2), dx_num)
print("tanh backward with the input instead of the output: relative error "
      f"{err_input:.1e}")
assert err_input > 0.1, err_input

# %% [markdown]
# :::{dropdown} Solution 3
# Setting the derivative of $\tfrac h2 |L''| + \varepsilon |L| / h$ to zero gives
# $h^* = \sqrt{2\varepsilon |L| / |L''|} \approx \sqrt{\varepsilon} \approx 10^{-8}$ in float64, and there the
# error is $\sqrt{2\varepsilon |L|\,|L''|} \approx 10^{-8}$: a thousand times worse than the central difference's
# best ($\approx\varepsilon^{2/3} \approx 10^{-11}$). The line printed under the figure shows both minima.
# :::

# %% [markdown]
# #### After you have done assignment 1
#
# `tanh_forward` and `tanh_backward` as minidt ships them: the reference solution of assignment 1 (`minidt
# assignment start linear_activations DIR`). Collapsed in the book: read it once your own passes `minidt grade`.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the code (after assignment 1)"}
print(inspect.getsource(tanh_forward))
print(inspect.getsource(tanh_backward))
