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
# # 07 · Parity: the whole model against transformers, every output and every gradient
#
# *Full size: about 15 s on 2 idle CPU cores; `MINIDT_SMOKE=1`: seconds.*
#
# Each layer's backward pass was checked by finite differences. That proves each piece is the derivative of
# *our* forward pass; it does not prove our forward pass is the Decision Transformer. For that we need an
# independent implementation: Hugging Face transformers' `DecisionTransformerModel`, with PyTorch's autograd
# computing its gradients. If the two agree to float64 round-off on every output and every parameter gradient,
# then the token layout, the embeddings, the quirks (position ids all zero, `embed_ln` with eps $10^{-5}$, the
# predictions read at the state and action tokens) and all the hand-written backward passes are right together.
#
# The plan, llm.c's `test_gpt2.c` in Python:
#
# 1. build the reference and copy its weights into minidt (`load_state_dict` with the reference's own names);
# 2. run both forward on the same left-padded batch, compare every output at the real positions;
# 3. backward from the same upstream gradient, compare every parameter gradient;
# 4. print the table `minidt parity` prints;
# 5. save a checkpoint with one library and load it with the other.
#
# Needs torch and transformers (`pip install -e ".[test]"`); without them the minidt-only parts still run.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the set-up"}
import os
import tempfile
import warnings

import numpy as np

import minidt
from minidt import DecisionTransformerConfig, DecisionTransformerModel
from minidt.backend import to_numpy
from minidt.parity import format_table, make_inputs, rel_error
from minidt.plots import figure_dir, show

SMOKE = os.environ.get("MINIDT_SMOKE") == "1"
# figures/ beside this file, or $MINIDT_FIGURES
FIGURES = figure_dir(globals().get("__file__"))

# transformers imports tqdm.auto, which in a notebook without ipywidgets (the book's
# kernel) warns that it falls back to text bars; transformers shows none here anyway
# (disable_progress_bar below)
warnings.filterwarnings("ignore", message="IProgress not found")
try:
    import torch
    import transformers

    HAVE_REFERENCE = True
    torch.set_default_dtype(torch.float64)
    # its vocabulary (bos/eos) warning is about text models
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
except ImportError:
    HAVE_REFERENCE = False
    print("torch / transformers not installed: skipping every comparison with the "
          "reference; "
          "running the minidt-only parts (pip install -e '.[test]' for the rest)")

# %% [markdown]
# ## A configuration both libraries read
#
# minidt's `DecisionTransformerConfig` takes the reference's field names, so one dict configures both. Dropout is
# off: the two libraries cannot draw the same dropout masks, and parity is about the deterministic math.
# `activation_function="gelu_new"` exercises the tanh GELU; `n_head > 1` exercises the head split.

# %%
fields = dict(state_dim=3, act_dim=2, hidden_size=32 if SMOKE else 128,
              n_layer=2 if SMOKE else 3, n_head=2 if SMOKE else 4, n_inner=None,
              activation_function="gelu_new", max_ep_len=64 if SMOKE else 1000,
              resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, action_tanh=True)
B, T = (3, 6) if SMOKE else (8, 20)
config = DecisionTransformerConfig(**fields)
print(config)

# %% [markdown]
# ## Step 1: identical weights
#
# We let transformers initialize its model, then copy its `state_dict` into minidt. The names are the same
# (`encoder.h.0.attn.c_attn.weight`, ...), and so are the layouts: GPT-2's Conv1D stores weights as (in, out) and
# computes $xW + b$, the embedding and prediction heads are `nn.Linear` with (out, in). The reference ties nothing
# and has no buffers we need (GPT-2's legacy `attn.bias` causal-mask buffers, when present, are skipped).
#
# Before copying we perturb every LayerNorm: at initialization its weight is 1 and its bias 0, and then
# $\mathrm{LN}(\mathrm{LN}(x)) = \mathrm{LN}(x)$ up to the effect of $\epsilon$ (about $10^{-5}$), so a hidden state
# taken on the wrong side of the final `ln_f` would nearly agree (exercise 2). Random gains and biases make such a
# mistake an error of order 1.

# %%
if HAVE_REFERENCE:
    ref_config = transformers.DecisionTransformerConfig(**fields)
    # the plain softmax(QK^T)V path: what minidt writes out
    ref_config._attn_implementation = "eager"
    torch.manual_seed(0)
    ref = transformers.DecisionTransformerModel(ref_config).to(torch.float64)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "ln" in name.split(".")[-2]:  # embed_ln, ln_1, ln_2, ln_f
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn_like(p))
    state = ref.state_dict()
    model = DecisionTransformerModel(config, dtype="float64").load_state_dict(state)
    for name in ("embed_timestep.weight", "encoder.h.0.attn.c_attn.weight",
                 "encoder.h.0.mlp.c_fc.weight",
                 "predict_action.0.weight"):
        print(f"{name:35s} transformers {tuple(state[name].shape)}  minidt "
              f"{dict(model.named_parameters())[name].shape}")
    names = [n for n, _ in model.named_parameters()]
    assert names == [n for n, _ in ref.named_parameters()]
else:
    model = DecisionTransformerModel(config, dtype="float64", seed=0)
print(sum(int(np.prod(p.shape)) for p in model.parameters()), "parameters")

# %% [markdown]
# ## Step 2: forward, compared where it is defined
#
# The batch is left-padded, as the trainer's segment sampler makes it: row $b$ has some padded timesteps first
# (`attention_mask` 0), then real ones. Padding is *key* masking: a real token never attends to a padded one.
# But a padded token is still a query. In a left-padded row, every key a padded query may see (the causal mask
# lets it see only earlier tokens) is padding too, so its softmax has no legitimate key at all. What comes out is
# an accident of how the masks are added. transformers 5.x folds causality and padding into one additive mask
# holding the dtype's most negative number; in such a row every score, future keys included, becomes that same
# number, and the softmax is uniform over the *whole* row. minidt keeps future keys at $-\infty$ and averages over
# the visible (padded) keys. Both are finite, neither means anything, and other transformers versions (or its
# SDPA path) do something else again. No real output depends on these rows, and the masked loss ignores them. So
# we compare outputs at real positions only, and we check the two properties that make that legitimate:
#
# - padded rows are finite (a NaN there would poison the backward pass: $\mathrm{NaN} \times 0 = \mathrm{NaN}$);
# - changing what sits at padded positions does not change any real output.

# %%
# float64, each row left-padded by 0 .. T-1 steps, timesteps random
inputs = make_inputs(config, B, T, seed=0)
real = inputs["attention_mask"] > 0  # B,T
print("attention_mask:\n", inputs["attention_mask"].astype(int))

# dropout off (it is 0 here anyway); grad mode, on by default, keeps the caches that
# backward needs
model.eval()
out = model(**inputs, output_hidden_states=True, output_attentions=True)
finite = all(np.isfinite(to_numpy(x)).all() for x in out.to_tuple())
assert finite, "NaN or inf at a padded position"

scrambled = dict(inputs)
rng = np.random.default_rng(1)
for key in ("states", "actions", "returns_to_go"):
    scrambled[key] = np.where(real[..., None], inputs[key],
                              rng.normal(size=inputs[key].shape) * 100)
# a forward-only comparison: keep no caches (and leave `model`'s for step 3)
with minidt.no_grad():
    twin = DecisionTransformerModel(config, dtype="float64")
    out_scrambled = twin.load_state_dict(model.state_dict())(**scrambled)
err = np.max(np.abs(to_numpy(out_scrambled.action_preds)[real]
                    - to_numpy(out.action_preds)[real]))
print(f"real action_preds after scrambling the padding: max change {err:.1e}")
assert err < 1e-12, err

# %%
if HAVE_REFERENCE:
    t_inputs = {k: torch.tensor(v, dtype=torch.long if k == "timesteps"
                                else torch.float64)
                for k, v in inputs.items()}
    ref.train()
    ref_out = ref(**t_inputs, output_hidden_states=True, output_attentions=True,
                  return_dict=True)
    real3 = np.repeat(real, 3, axis=1)  # B,3T: three tokens (R, s, a) per timestep
    pairs = [(name, getattr(out, name), getattr(ref_out, name), real)
             for name in ("state_preds", "action_preds", "return_preds")]
    pairs += [(f"hidden_states[{i}]", a, b, real3)
              for i, (a, b) in enumerate(zip(out.hidden_states, ref_out.hidden_states))]
    pairs += [(f"attentions[{i}]", a, b,
               np.broadcast_to(real3[:, None, :], tuple(b.shape[:3])))
              for i, (a, b) in enumerate(zip(out.attentions, ref_out.attentions))]
    for name, ours, theirs, keep in pairs:
        theirs = theirs.detach().numpy()
        _, rel = rel_error(to_numpy(ours)[keep], theirs[keep])
        _, rel_pad = rel_error(to_numpy(ours)[~keep], theirs[~keep])
        print(f"{name:18s} real positions rel err {rel:.1e}   padded positions "
              f"{rel_pad:.1e} (not compared)")
        assert rel < 1e-9, (name, rel)

    b = int(np.argmin(inputs["attention_mask"].sum(axis=1)))  # the most padded row
    np.set_printoptions(precision=3, suppress=True, linewidth=120)
    print(f"attention of the first query (a padded token) in row {b}, layer 0, head 0, "
          f"over all {3 * T} keys:")
    print("  transformers", ref_out.attentions[0][b, 0, 0].detach().numpy())
    print("  minidt      ", to_numpy(out.attentions[0])[b, 0, 0])

# %% [markdown]
# ## Step 3: backward, from the same upstream gradient
#
# There is no autograd in minidt: `model.backward(action_preds=g, ...)` takes $\partial L/\partial(\text{prediction})$
# and accumulates $\partial L/\partial\theta$ into each `Parameter.grad`. To give PyTorch the same upstream
# gradient we use llm.c's "fake loss": $L = \sum g \odot \hat{y}$ has $\partial L / \partial \hat{y} = g$ exactly.
#
# $g$ is random at real positions and **zero at padded ones**: that is what the masked MSE produces, and it keeps
# the meaningless padded rows out of the gradients (a nonzero $g$ there would push gradient through rows that
# differ between implementations). All three heads get a gradient, so every parameter has one.

# %%
grads = {name: rng.normal(size=getattr(out, name).shape) * real[..., None]
         for name in ("state_preds", "action_preds", "return_preds")}
model.zero_grad()
model.backward(**grads)

if HAVE_REFERENCE:
    fake_loss = sum((getattr(ref_out, k) * torch.tensor(g)).sum()
                    for k, g in grads.items())
    fake_loss.backward()
    # A parameter the loss does not reach has grad None in both libraries: GPT-2's word
    # embedding `wte` (the Decision Transformer feeds `inputs_embeds`, never token ids).
    # Compare it as zeros.
    unused = [name for name, p in ref.named_parameters() if p.grad is None]
    print("no gradient in transformers:", unused, " in minidt:",
          [name for name, p in model.named_parameters() if p.grad is None])
    ref_grads = {name: np.zeros(tuple(p.shape)) if p.grad is None else p.grad.numpy()
                 for name, p in ref.named_parameters()}
    worst = max((rel_error(np.zeros(p.shape) if p.grad is None else to_numpy(p.grad),
                           ref_grads[name])[1], name)
                for name, p in model.named_parameters())
    print(f"worst relative gradient error: {worst[0]:.1e} ({worst[1]})")
    assert worst[0] < 1e-8, worst

# %% [markdown]
# ## Step 4: the `minidt parity` table
#
# `minidt.parity.run` does steps 1 to 3 for any configuration (here the one above) and returns one row per output
# and per gradient; `format_table` prints them. Its tolerances, relative to the reference's largest entry:
# float64 outputs $10^{-9}$ and gradients $10^{-8}$ (round-off, nothing else), and for minidt in float32 against
# the float64 reference $10^{-4}$ and $2 \times 10^{-3}$ (float32 has 24 bits, about $6 \times 10^{-8}$ per
# operation, accumulated over a few thousand-term sums). The same command-line tool: `minidt parity --dtype float64`.

# %%
if HAVE_REFERENCE:
    from minidt import parity

    tables = {}
    for dtype in ("float64", "float32"):
        rows = tables[dtype] = parity.run(config, dtype=dtype, batch=B, steps=T, seed=0)
        table = format_table(rows)
        print(f"--- minidt {dtype} against the float64 reference ---")
        lines = table.splitlines()
        print(table if not SMOKE else "\n".join(lines[:8] + ["..."] + lines[-3:]))
        assert all(r.ok for r in rows), [r.name for r in rows if not r.ok]

# %% [markdown]
# The same numbers as a picture: each row's relative error, with the tolerances as vertical lines. float64 sits at
# $10^{-16}$, the unit round-off: there is no error left to find. float32 sits near $10^{-7}$, float32's own.
# (An exact zero, the unused `wte`, is drawn at $10^{-18}$.)

# %%
if HAVE_REFERENCE:
    import matplotlib.pyplot as plt

    names = [r.name for r in tables["float64"]]
    fig, ax = plt.subplots(figsize=(8, 0.16 * len(names) + 1.5))
    for (dtype, rows), color in zip(tables.items(), ("tab:blue", "tab:orange")):
        ax.scatter([max(r.max_rel, 1e-18) for r in rows], np.arange(len(rows)), s=10,
                   color=color,
                   label=f"minidt {dtype}")
        for tol, ls in zip(parity.TOLERANCES[dtype], ("-", ":")):
            ax.axvline(tol, color=color, ls=ls, lw=1)
    ax.set_yticks(np.arange(len(names)), names, fontsize=5)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("max relative error against transformers (float64); lines: "
                  "tolerances (solid outputs, "
                  "dotted gradients)")
    ax.legend(loc="lower right")
    show(fig, FIGURES / "07_parity_errors.png")
    
# %% [markdown]
# ## Step 5: checkpoints, both ways
#
# Both libraries write `config.json` plus `model.safetensors` (`save_pretrained`) and read them back
# (`from_pretrained`). A checkpoint trained with minidt loads into transformers, and the reverse; the outputs must
# then agree as before.

# %%
with tempfile.TemporaryDirectory() as tmp:
    model.save_pretrained(os.path.join(tmp, "minidt"))
    print("minidt wrote:", sorted(os.listdir(os.path.join(tmp, "minidt"))))
    again = DecisionTransformerModel.from_pretrained(os.path.join(tmp, "minidt"),
                                                     dtype="float64").eval()
    ours = to_numpy(model.eval()(**inputs).action_preds)
    # minidt -> minidt: bit for bit
    assert np.array_equal(to_numpy(again(**inputs).action_preds), ours)
    if HAVE_REFERENCE:
        # minidt -> transformers
        loaded = transformers.DecisionTransformerModel.from_pretrained(
            os.path.join(tmp, "minidt"), attn_implementation="eager",
            dtype=torch.float64)
        loaded = loaded.to(torch.float64).eval()
        with torch.no_grad():
            theirs = loaded(**t_inputs).action_preds.numpy()
        err_a = rel_error(ours[real], theirs[real])[1]
        # transformers -> minidt
        ref.save_pretrained(os.path.join(tmp, "transformers"))
        print("transformers wrote:",
              sorted(os.listdir(os.path.join(tmp, "transformers"))))
        from_ref = DecisionTransformerModel.from_pretrained(
            os.path.join(tmp, "transformers"), dtype="float64")
        err_b = rel_error(to_numpy(from_ref.eval()(**inputs).action_preds)[real],
                          theirs[real])[1]
        print(f"minidt checkpoint in transformers: rel err {err_a:.1e}; transformers "
              f"checkpoint in minidt: {err_b:.1e}")
        assert err_a < 1e-9 and err_b < 1e-9, (err_a, err_b)

# %% [markdown]
# That is the whole model checked. From here on we trust it and train it: tutorial 8 builds the data.

# %% [markdown]
# ## Exercises
#
# **1. Predict, then run.** Scramble one *real* timestep $t$ of one row (its state, action and return-to-go)
# instead of the padding. Which `action_preds` change: in which row, at which steps?
#
# **2. Plant a bug, watch the check catch it.** Suppose an implementation returned the last block's raw output,
# before `ln_f`, as its last hidden state but applied `ln_f` again before the heads. How large is the difference
# with LayerNorms at their initialization ($w = 1$, $b = 0$), and with the perturbed ones? Which tolerances would
# miss it?
#
# **3. Derive before the reveal.** float32 rounds each operation with a relative error up to
# $u = 2^{-24} \approx 6\times10^{-8}$. A sum of $n$ terms can accumulate up to $n u$, but its error typically
# grows like $\sqrt n\, u$. With sums of a few hundred to a few thousand terms (the matrix products of hidden size
# 128), which tolerance would you pick for outputs, and why are gradients given more room?
#
# ### Solutions
#
# Each solution is one cell, collapsed in the book; in the script, everything below this line is the solutions.

# %% tags=["hide-cell"]
# Solution 1: only that row, and only from step t on: causality hides the change from
# the earlier steps, and rows of a batch never see each other.
row_b = int(np.argmax(real.sum(axis=1)))  # the least padded row
t_s = int(np.flatnonzero(real[row_b])[1])  # its second real step
changed = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}
for key in ("states", "actions", "returns_to_go"):
    changed[key][row_b, t_s] += 1.0
with minidt.no_grad():
    diff = np.abs(to_numpy(model(**changed).action_preds)
                  - to_numpy(model(**inputs).action_preds)).max(axis=-1)
diff = np.where(real, diff, 0.0)  # real positions only
print(f"row {row_b}, step {t_s} changed; rows with a change: "
      f"{np.flatnonzero(diff.max(axis=1) > 0)}, "
      f"first changed step: {np.flatnonzero(diff[row_b] > 0)[0]}")
assert np.flatnonzero(diff.max(axis=1) > 0).tolist() == [row_b]
assert np.flatnonzero(diff[row_b] > 0)[0] == t_s

# %% tags=["hide-cell"]
# Solution 2: at initialization LayerNorm is nearly idempotent: LN(LN(z)) differs from
# LN(z) only through eps, by about 1e-5. The float64 comparison (tolerance 1e-9) would
# still flag that, but the float32 one (1e-4) would pass it, and so would any test that
# compares at a loose tolerance. With a random gain and bias, LN(LN(z)) and LN(z) differ
# at order 1, and every comparison fails.
from minidt.layers.layernorm import layernorm_forward

z = np.random.default_rng(2).standard_normal((4, fields["hidden_size"])) * 3 + 1
C_ = z.shape[-1]
perturbed = (1 + 0.1 * np.random.default_rng(3).standard_normal(C_),
             0.1 * np.random.default_rng(4).standard_normal(C_))
for name, (w_, b_) in {"at init (w = 1, b = 0)": (np.ones(C_), np.zeros(C_)),
                       "perturbed": perturbed}.items():
    once = layernorm_forward(z, w_, b_, 1e-5)[0]
    twice = layernorm_forward(once, w_, b_, 1e-5)[0]
    print(f"LayerNorm {name:24s}: max |LN(LN(z)) - LN(z)| = "
          f"{np.max(np.abs(twice - once)):.1e}")

# %% [markdown]
# :::{dropdown} Solution 3
# With $n \approx 10^3$, $\sqrt n\,u \approx 2\times10^{-6}$ per sum, and an output passes through a few dozen
# such sums and nonlinearities: an error of order $10^{-5}$ relative to the output's scale is what correct float32
# code produces, so $10^{-4}$ leaves a margin without hiding a real bug (those give $10^{-2}$ to 1). A gradient is
# a longer chain (the forward, then the backward through every layer again) and some gradient entries are sums
# over the whole batch and sequence ($B \cdot 3T$ terms for `wpe[0]`), so its round-off is larger: $2\times10^{-3}$.
# The figure above shows where the measured errors sit.
# :::
