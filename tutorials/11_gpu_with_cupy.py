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
# # 11 · Running on a GPU with CuPy
#
# *Full size: about 10 s on 2 idle CPU cores; `MINIDT_SMOKE=1`: seconds.*
#
# CuPy is NumPy's interface on an NVIDIA GPU. minidt runs on it without a second copy of the model, because of
# one rule: **model code never imports NumPy**. Each function asks its inputs for their namespace,
#
# ```python
# xp = array_namespace(x)  # numpy for NumPy arrays, the CuPy namespace for CuPy arrays
# ```
#
# and uses only what the Python Array API standard defines on it (`xp.exp`, `xp.sum`, `@`, `xp.where`, ...).
# The few things the standard lacks live in `minidt/backend.py`, once per backend: `erf` (the exact GELU),
# `scatter_add` (the embedding backward), seeded random numbers, and the explicit transfers `asarray` (host to
# device) and `to_numpy` (device to host).
#
# This tutorial runs on CuPy when CuPy imports and a GPU is present. Otherwise it runs on the **strict** backend:
# `array_api_strict` arrays on a non-default device, which reject exactly the mistakes that break a CuPy run
# (NumPy-only calls, implicit conversion to NumPy, mixing with host arrays). CI has no GPU; the strict backend is
# how CI knows the CuPy path still works.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the set-up"}
import os

import matplotlib.pyplot as plt
import numpy as np

import minidt
from minidt import DecisionTransformerConfig, DecisionTransformerModel
from minidt.backend import array_namespace, device, get_backend, to_numpy
from minidt.losses import masked_mse
from minidt.optim import AdamW, clip_grad_norm_
from minidt.plots import figure_dir, show

SMOKE = os.environ.get("MINIDT_SMOKE") == "1"
# figures/ beside this file, or $MINIDT_FIGURES
FIGURES = figure_dir(globals().get("__file__"))

# %% [markdown]
# ## Choosing a backend
#
# Per model, `DecisionTransformerModel(config, backend="cupy")`; per process, `minidt.set_backend("cupy")` or the
# environment variable `MINIDT_BACKEND=cupy`. Asking for CuPy without CuPy, or without a GPU, is an error that says
# which is missing:

# %%
try:
    device_backend = get_backend("cupy")
    ON_GPU = True
    print("CuPy and a GPU found: running on", device_backend.device)
except RuntimeError as e:
    ON_GPU = False
    print(f"no GPU here ({e}).")
    print(">>> Running on the STRICT backend instead (array_api_strict on 'device1'): "
          "it checks that the code would run on a GPU, but it computes with NumPy on "
          "the CPU, so nothing below is faster. <<<")
    device_backend = get_backend("strict")
host = get_backend("numpy")
xp = device_backend.xp
print("backend:", device_backend.name, " namespace:", xp.__name__, " device:",
      device_backend.device)

# %% [markdown]
# ## Transfers are explicit
#
# An array is created on the device by `backend.asarray(host_array)` and brought back by `to_numpy(x)`. Each is a
# copy across the PCIe bus on a GPU, and `to_numpy` also waits for the GPU to finish (a synchronization). Nothing
# else in minidt converts: the conversions that would happen silently with NumPy are errors here.

# %%
# host -> device
x = device_backend.asarray(np.arange(6.0).reshape(2, 3), dtype="float64")
print(type(x).__module__, device(x), array_namespace(x).__name__)
mistakes = {
    "np.asarray(x): implicit device -> host": lambda: np.asarray(x),
    "x + np.ones(3): mixing with a host array": lambda: x + np.ones(3),
}
if ON_GPU:
    # CuPy implements NumPy's ufunc protocol: np.exp runs cupy.exp on the GPU and
    # returns a CuPy array
    assert type(np.exp(x)) is type(x)
    print("np.exp(x) on CuPy: dispatched to CuPy, a", type(np.exp(x)).__name__,
          "(allowed there, not in minidt)")
else:
    # the strict backend refuses both: a NumPy function, and a device-less array it
    # would have to place
    mistakes["np.exp(x): a NumPy function on a device array"] = lambda: np.exp(x)
    mistakes["x + xp.ones(3): an array created without device="] = \
        lambda: x + xp.ones(3, dtype=xp.float64)
for what, mistake in mistakes.items():
    try:
        mistake()
    except (TypeError, ValueError, RuntimeError) as e:
        print(f"{what:52s} -> {type(e).__name__}: {str(e)[:70]}")
    else:
        raise AssertionError(f"{what} should have failed on the {device_backend.name} "
                             "backend")
# the right way: the namespace, the device
y = xp.exp(x) + xp.ones((2, 3), dtype=xp.float64, device=device(x))
# device -> host, explicitly
assert np.allclose(to_numpy(y), np.exp(np.arange(6.0).reshape(2, 3)) + 1)

# %% [markdown]
# ## What stays on the device, and what crosses
#
# A training step moves as little as possible:
#
# | crosses, each step | stays on the device |
# |---|---|
# | the batch from the sampler (host NumPy), in: one `asarray` per field | parameters, gradients |
# | the loss, out, *only when logged* (`float(loss)` waits for the GPU) | activations and the caches backward keeps |
# | | AdamW's moments $m, v$ |
# | | the loss, the gradient norm, the clipping factor (0-d arrays) |
#
# That last row is why `masked_mse` returns a 0-d array and `clip_grad_norm_` computes
# $\min(1, c / (\lVert g \rVert + \epsilon))$ as a 0-d array multiplied into the gradients: a Python `if` on the
# norm would force a synchronization every step. In evaluation, gymnasium's environments live on the host: one
# transfer in (the observations) and one out (the actions) per environment step, for all environments at once.
#
# Weights are drawn on the host by NumPy's generator and moved to the device, so one seed gives the same initial
# weights on every backend. Dropout masks are drawn where the model runs: on a GPU by cuRAND (drawing them on the
# host would copy megabytes per step), so CuPy's masks differ from NumPy's, and the same seed gives the same masks
# run after run. The strict backend compares NumPy's random bits on its device: NumPy's masks. The comparison
# below turns dropout off, so that both backends compute the same function.

# %% [markdown]
# ## One training step on the device, compared with NumPy
#
# Two models from the same seed, one per backend, the same batch; forward, masked MSE, backward, clipping, one
# AdamW step. In float64 the device must reproduce NumPy to round-off (on a GPU, cuBLAS sums in a different order
# than OpenBLAS: differences of order $10^{-15}$ relative; on the strict backend, which is NumPy underneath, they
# are zero). In float32 the bound is float32's precision.

# %%
config = DecisionTransformerConfig(state_dim=3, act_dim=1,
                                   hidden_size=32 if SMOKE else 128,
                                   n_layer=2 if SMOKE else 3, n_head=2 if SMOKE else 4,
                                   max_ep_len=200,
                                   activation_function="gelu", action_tanh=True,
                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
B, T = (4, 10) if SMOKE else (64, 20)
rng = np.random.default_rng(0)
mask = np.ones((B, T), np.float32)
for b in range(B):
    mask[b, : rng.integers(0, T)] = 0.0  # left padding, as the sampler makes it
batch = {"states": rng.normal(size=(B, T, 3)),
         "actions": rng.uniform(-1, 1, size=(B, T, 1)), "rewards": None,
         "returns_to_go": rng.normal(size=(B, T, 1)),
         "timesteps": rng.integers(0, 200, size=(B, T)),
         "attention_mask": mask}


def train_step(model: DecisionTransformerModel) -> tuple[float, dict, dict]:
    """One step; -> (loss, {name: grad}, {name: updated parameter}) as host arrays."""
    be = model.backend
    model.train()
    out = model(**batch)  # the model moves host inputs to its device (one asarray each)
    actions, mask = (be.asarray(batch[k], model.dtype)
                     for k in ("actions", "attention_mask"))
    loss, daction = masked_mse(out.action_preds, actions, mask)
    model.zero_grad()
    model.backward(action_preds=daction)
    clip_grad_norm_(model.parameters(), 0.25)
    grads = {n: to_numpy(p.grad) for n, p in model.named_parameters()
             if p.grad is not None}
    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    opt.step()
    for p in model.parameters():  # everything the step touched is still on the device
        assert device(p.data) == be.device
        assert p.grad is None or device(p.grad) == be.device
    assert all(device(s["exp_avg"]) == be.device for s in opt.state.values())
    params = {n: to_numpy(p.data) for n, p in model.named_parameters()}
    return float(loss), grads, params


errors = {}
for dtype, tol in (("float64", 1e-10), ("float32", 1e-4)):
    on_host = DecisionTransformerModel(config, dtype=dtype, backend=host, seed=0)
    on_device = DecisionTransformerModel(config, dtype=dtype, backend=device_backend,
                                         seed=0)
    loss_h, grads_h, params_h = train_step(on_host)
    loss_d, grads_d, params_d = train_step(on_device)
    rel = {n: np.max(np.abs(grads_d[n] - g)) / max(np.max(np.abs(g)), 1e-30)
           for n, g in grads_h.items()}
    errors[dtype] = rel
    param_err = max(np.max(np.abs(params_d[n] - p)) for n, p in params_h.items())
    worst = max(rel, key=rel.get)
    which = f" ({worst})" if rel[worst] > 0 else ""
    print(f"{dtype}: loss numpy {loss_h:.8f}, {device_backend.name} {loss_d:.8f}; "
          f"worst gradient rel err {rel[worst]:.1e}{which}; worst updated-parameter "
          f"difference {param_err:.1e}")
    assert abs(loss_d - loss_h) <= tol * abs(loss_h), (loss_h, loss_d)
    assert max(rel.values()) < tol, max(rel.items(), key=lambda kv: kv[1])
    assert param_err < tol, param_err

# %% [markdown]
# Per parameter, the gradient's relative difference between the device and NumPy. On a GPU, expect float32 bars
# near $10^{-7}$ (float32's rounding, summed in another order) and float64 bars near $10^{-16}$. On the strict
# backend every bar is exactly zero (drawn at the floor of the axis): it is NumPy underneath, doing the same
# operations in the same order, which is the point: the same code, only the namespace changed.

# %%
names = list(errors["float32"])
fig, ax = plt.subplots(figsize=(8, 0.22 * len(names) + 1.5))
floor = 1e-18  # an exact zero on a log axis
for dtype, color in (("float32", "tab:orange"), ("float64", "tab:blue")):
    ax.barh(np.arange(len(names)), [max(errors[dtype][n], floor) for n in names],
            color=color, alpha=0.7,
            label=dtype)
ax.set_yticks(np.arange(len(names)), names, fontsize=6)
ax.set_xscale("log")
ax.set_xlim(floor / 2, 1e-2)
ax.set_xlabel(f"max |grad({device_backend.name}) - grad(numpy)| / max |grad(numpy)|")
ax.set_title(f"one training step: {device_backend.name} backend against NumPy")
ax.legend()
show(fig, FIGURES / "11_backend_agreement.png")

# %% [markdown]
# ## Moving a trained model
#
# `model.to("cupy")` moves every parameter (and gradient) to another backend in place: train on a GPU, then
# `model.to("numpy")` to evaluate on a laptop, or load a checkpoint with
# `DecisionTransformerModel.from_pretrained(path, backend="cupy")`. Checkpoints always hold host arrays.

# %%
# eval(): dropout off
model = DecisionTransformerModel(config, dtype="float64", backend=host, seed=0).eval()
with minidt.no_grad():  # inference: keep no caches
    before = to_numpy(model(**batch).action_preds)
    model.to(device_backend)
    assert all(device(p.data) == device_backend.device for p in model.parameters())
    after = to_numpy(model(**batch).action_preds)
print(f"after .to({device_backend.name!r}): max |difference| "
      f"{np.max(np.abs(after - before)):.1e}")
assert np.allclose(after, before, rtol=0, atol=1e-12)

# %% [markdown]
# ## When a GPU pays
#
# A GPU launches one kernel per array operation, a few microseconds each whatever its size. A training step of
# minidt's model is a few hundred operations, so for a small model and batch the launches, not the arithmetic,
# set the time, and the GPU may be no faster than the CPU. The GPU pays when each operation has a lot of work:
# larger hidden sizes, batches and contexts. Measure before you move.
#
# Time with a synchronization at the end: CuPy returns as soon as the kernels are queued, before they have run.
# Below, on a GPU, the step without the host copies `train_step` makes for the comparison.

# %%
if ON_GPU:
    import time

    import cupy

    def device_step(model: DecisionTransformerModel, opt: AdamW, inputs: dict) -> None:
        """forward, loss, backward, clip, AdamW: no host transfer at all (the inputs are
        already on the device)."""
        out = model(**inputs)
        _, daction = masked_mse(out.action_preds, inputs["actions"],
                                inputs["attention_mask"])
        model.zero_grad()
        model.backward(action_preds=daction)
        clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    for backend in (host, device_backend):
        model = DecisionTransformerModel(config, dtype="float32", backend=backend,
                                         seed=0).train()
        opt = AdamW(model.parameters(), lr=1e-3)
        inputs = {k: None if v is None
                  else backend.asarray(v, None if k == "timesteps" else "float32")
                  for k, v in batch.items()}  # moved once, outside the timing
        # warm-up: CuPy compiles its kernels on first use
        device_step(model, opt, inputs)
        cupy.cuda.Device().synchronize()
        t = time.perf_counter()
        for _ in range(10):
            device_step(model, opt, inputs)
        cupy.cuda.Device().synchronize()
        print(f"{backend.name}: {(time.perf_counter() - t) / 10 * 1000:.1f} ms per "
              "training step "
              f"(hidden {config.hidden_size}, batch {B}, K {T})")
else:
    print("no GPU: timing skipped (the strict backend is NumPy plus checks; its speed "
          "means nothing). Backend used "
          f"throughout: {device_backend.name}.")

# %% [markdown]
# ## Exercises
#
# **1. Predict, then run.** Is the strict backend faster or slower than NumPy for the same forward pass, and by
# roughly how much? (It computes with NumPy underneath.)
#
# **2. Plant a bug, watch the check catch it.** Write a softmax with one NumPy call in it, `np.exp(x - m)`, and
# run it on a device array. Which error do you get on the strict backend, and what would CuPy do?
#
# **3. Derive before the reveal.** Count the host-device transfers of one `train_step` above (sampler batch in,
# loss out), and of one step of a vectorized rollout over $N$ environments. Why does neither grow with the number
# of layers?
#
# ### Solutions
#
# Each solution is one cell, collapsed in the book; in the script, everything below this line is the solutions.

# %% tags=["hide-cell"]
# Solution 1: slower. array_api_strict wraps every NumPy array in its own Array object
# and checks every call (dtypes, devices, the standard's rules), so each of the few
# hundred operations of a forward pays a fixed overhead on top of NumPy's own work.
import time

timings = {}
for backend in (host, get_backend("strict")):
    m = DecisionTransformerModel(config, dtype="float32", backend=backend,
                                 seed=0).eval()
    with minidt.no_grad():
        m(**batch)  # warm-up
        t0 = time.perf_counter()
        for _ in range(3):
            m(**batch)
    timings[backend.name] = (time.perf_counter() - t0) / 3
print({k: f"{v * 1000:.1f} ms" for k, v in timings.items()},
      f"strict / numpy = {timings['strict'] / timings['numpy']:.1f}")


# %% tags=["hide-cell"]
# Solution 2: strict refuses the NumPy call on its array (RuntimeError: no conversion to
# NumPy on device1). CuPy raises a TypeError for an implicit conversion too, but it
# *accepts* np.exp on a CuPy array (it dispatches NumPy functions to itself): a bug
# strict catches and a GPU run would let through.
def softmax_with_a_numpy_call(x):
    xp = array_namespace(x)
    m = xp.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)  # the bug: NumPy, not xp
    return e / xp.sum(e, axis=-1, keepdims=True)


strict_backend = get_backend("strict")
try:
    softmax_with_a_numpy_call(strict_backend.asarray(np.ones((2, 3))))
except (RuntimeError, TypeError) as e:
    print(f"strict: {type(e).__name__}: {str(e)[:90]}")
else:
    raise AssertionError("the strict backend accepted np.exp on a device array")

# %% [markdown]
# :::{dropdown} Solution 3
# A training step: one `asarray` per host array in. The model moves its five inputs (states, actions,
# returns-to-go, timesteps, mask), and `train_step` above moves the target actions and the mask once more for the
# loss: seven, which a trainer could make five by moving the batch once. And one read of the loss out when it is
# logged; parameters, gradients, moments and activations never leave the
# device. A rollout step: the observations of all $N$ environments in (one array) and their actions out (one
# array), because gymnasium steps on the host. Neither depends on the number of layers: every layer's work
# happens on arrays that are already on the device.
# :::
