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
# # 06 · The GPT-2 block, and the Decision Transformer's tokens
#
# *Full size: about 15 s on 2 idle CPU cores; `MINIDT_SMOKE=1`: seconds.*
#
# Tutorials 02–05 built every layer. This one assembles them twice: first into GPT-2's pre-LN block (and its
# backward pass through the residual connections), then into the Decision Transformer, which turns a trajectory
# of returns-to-go, states and actions into one token sequence for GPT-2 and reads its predictions off particular
# tokens. The reference implementation (transformers' `DecisionTransformerModel`) has a few quirks a
# reimplementation must copy to agree with it; each is stated and then *verified* on minidt's model.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the set-up"}
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np

import minidt
from minidt import DecisionTransformerConfig, DecisionTransformerModel
from minidt.backend import Generator
from minidt.layers import Block
from minidt.layers.attention import attention_bias
from minidt.layers.layernorm import layernorm_forward
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
# ## 1. The pre-LN block
#
# $$x' = x + \operatorname{attn}(\operatorname{ln}_1(x)), \qquad y = x' + \operatorname{mlp}(\operatorname{ln}_2(x')).$$
#
# "Pre-LN": each branch normalizes its *input*; the residual stream $x \to x' \to y$ itself is never normalized
# inside the block (one final `ln_f` sits after the last block).
#
# **Backward through a residual.** If $y = x + f(x)$ then $\frac{\partial L}{\partial x} = \frac{\partial L}{\partial
# y} + J_f(x)^\top \frac{\partial L}{\partial y}$: the gradient reaches $x$ twice, straight down the identity path and
# back through the branch, and the two add. Applied twice, in reverse order:
#
# $$dx' = dy + \operatorname{ln}_2^\text{bwd}\big(\operatorname{mlp}^\text{bwd}(dy)\big), \qquad
#   dx = dx' + \operatorname{ln}_1^\text{bwd}\big(\operatorname{attn}^\text{bwd}(dx')\big).$$
#
# (`Block.forward` and `Block.backward` are these two lines each; assignment 4 asks for them as a pair of
# functions, and minidt's code is after the exercises.) Checked against finite differences in float64, on the input and on every parameter (LayerNorms perturbed away
# from ones and zeros, weights large enough that every branch matters):

# %%
B, T, C, H = (1, 4, 8, 2) if SMOKE else (2, 8, 16, 4)
block = Block(C, H, activation="gelu", std=0.2, gen=Generator(0), dtype="float64")
for name, p in block.named_parameters():
    if name.startswith("ln_"):
        p.data = p.data + 0.1 * rng.standard_normal(p.shape)
x = rng.standard_normal((B, T, C))
dy = rng.standard_normal((B, T, C))
y, _, _ = block(x)
dx = block.backward(dy)


def block_loss():
    return np.sum(block(x)[0] * dy)


errs = {"x": rel_error(dx, numerical_grad(block_loss, x))}
for name, p in block.named_parameters():
    errs[name] = rel_error(p.grad, numerical_grad(block_loss, p.data))
worst = max(errs, key=errs.get)
print(f"block backward vs finite differences: {len(errs)} arrays, worst {worst} at "
      f"{errs[worst]:.1e}")
assert errs[worst] < 1e-8, errs

# %% [markdown]
# The same block written in PyTorch (twenty lines, autograd for the backward), fed identical weights:

# %%
if torch is not None:
    F = torch.nn.functional
    P = {name: torch.tensor(p.data, requires_grad=True)
         for name, p in block.named_parameters()}

    def torch_block(x):
        def attn(u):
            # Conv1D layout: (in, out)
            qkv = u @ P["attn.c_attn.weight"] + P["attn.c_attn.bias"]
            q, k, v = (t.reshape(B, T, H, C // H).transpose(1, 2)
                       for t in qkv.split(C, dim=-1))
            s = q @ k.transpose(-1, -2) / (C // H) ** 0.5
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
            return o @ P["attn.c_proj.weight"] + P["attn.c_proj.bias"]

        def mlp(u):
            h = F.gelu(u @ P["mlp.c_fc.weight"] + P["mlp.c_fc.bias"])
            return h @ P["mlp.c_proj.weight"] + P["mlp.c_proj.bias"]

        x = x + attn(F.layer_norm(x, (C,), P["ln_1.weight"], P["ln_1.bias"], 1e-5))
        return x + mlp(F.layer_norm(x, (C,), P["ln_2.weight"], P["ln_2.bias"], 1e-5))

    xt = torch.tensor(x, requires_grad=True)
    yt = torch_block(xt)
    (yt * torch.tensor(dy)).sum().backward()
    terrs = {"y": rel_error(y, yt.detach().numpy()),
             "x": rel_error(dx, xt.grad.numpy())}
    terrs |= {name: rel_error(p.grad, P[name].grad.numpy())
              for name, p in block.named_parameters()}
    worst = max(terrs, key=terrs.get)
    print(f"block vs PyTorch: {len(terrs)} arrays, worst {worst} at {terrs[worst]:.1e}")
    assert terrs[worst] < 1e-12, terrs

# %% [markdown]
# Why pre-LN trains well: at GPT-2's initialization (weights $\sim N(0, 0.02^2)$) both branches are tiny, so the
# block is nearly the identity and so is its Jacobian: $dx \approx dy$. A deep stack passes gradients down the
# residual stream almost unchanged.

# %%
block0 = Block(C, H, activation="gelu", std=0.02, gen=Generator(1), dtype="float64")
block0(x)
dx0 = block0.backward(dy)
ratio = np.linalg.norm(dx0 - dy) / np.linalg.norm(dy)
print(f"at init: ||dx - dy|| / ||dy|| = {ratio:.3f}")
assert ratio < 0.2, ratio

# %% [markdown]
# ## 2. The Decision Transformer's tokens
#
# A trajectory segment of $T$ timesteps holds, per step $t$, the return-to-go $\hat R_t$ (the reward still to be
# collected: the *target* we condition on), the state $s_t$ and the action $a_t$. Each gets its own embedding
# (`nn.Linear`, tutorial 02), plus a learned embedding of the timestep $t$ shared by all three, and they are
# interleaved into **one sequence of $3T$ tokens**:
#
# $$\hat R_0\; s_0\; a_0\; \hat R_1\; s_1\; a_1\; \dots\; \hat R_{T-1}\; s_{T-1}\; a_{T-1}$$
#
# then `embed_ln` normalizes every token and GPT-2 runs causally over the sequence. Predictions are read off the
# final hidden state $h$:
#
# | prediction | read at token | sees | why there |
# |---|---|---|---|
# | `action_preds[t]` | $s_t$ (position $3t+1$) | $\hat R_{\le t}, s_{\le t}, a_{<t}$ | the action must be predicted *before* it is seen |
# | `state_preds[t]` | $a_t$ (position $3t+2$) | everything up to $a_t$ | the next state, given this state and action |
# | `return_preds[t]` | $a_t$ (position $3t+2$) | everything up to $a_t$ | likewise |
#
# Only `action_preds` is trained in the original paper; the other two heads exist and get gradients when used.
# (The embedding and interleaving is what assignment 5 asks for; minidt's forward and backward are after the
# exercises.)
#
# A small model in float64, dropout off, with one left-padded sequence in the batch. Its weights are drawn with
# `initializer_range` 0.2 rather than GPT-2's 0.02, so that every branch contributes visibly (at 0.02 the blocks
# are nearly the identity, section 1, and the inner gradients sit close to finite differences' noise floor):

# %%
state_dim, act_dim = 3, 2
Tm = 4 if SMOKE else 10
cfg = dict(state_dim=state_dim, act_dim=act_dim, hidden_size=16 if SMOKE else 32,
           n_layer=2, n_head=2, max_ep_len=64, resid_pdrop=0.0, embd_pdrop=0.0,
           attn_pdrop=0.0, activation_function="gelu_new",
           initializer_range=0.2)
config = DecisionTransformerConfig(**cfg)
model = DecisionTransformerModel(config, dtype="float64", seed=0)
for name, p in model.named_parameters():  # LayerNorms away from (1, 0): see quirk 3
    if "ln" in name:
        p.data = p.data + 0.1 * rng.standard_normal(p.shape)
Bm = 2
inputs = dict(states=rng.standard_normal((Bm, Tm, state_dim)),
              actions=rng.uniform(-1, 1, (Bm, Tm, act_dim)),
              returns_to_go=rng.uniform(0, 5, (Bm, Tm, 1)),
              timesteps=np.stack([np.arange(Tm), np.arange(Tm) + 1]),
              attention_mask=np.ones((Bm, Tm)))
inputs["attention_mask"][1, :2] = 0.0  # sequence 1 is left-padded by two steps
out = model(**inputs, output_hidden_states=True)
Cm = config.hidden_size
print({k: v.shape for k, v in (("action_preds", out.action_preds),
                               ("state_preds", out.state_preds),
                               ("return_preds", out.return_preds),
                               ("last_hidden_state", out.last_hidden_state))})

# the heads read the tokens the table says
h = out.last_hidden_state  # B,3T,C
s_tokens, a_tokens = h[:, 1::3], h[:, 2::3]
lin = model.predict_action[0]
assert np.allclose(np.tanh(s_tokens @ lin.weight.data.T + lin.bias.data),
                   out.action_preds, rtol=0, atol=1e-14)
for head, pred in ((model.predict_state, out.state_preds),
                   (model.predict_return, out.return_preds)):
    assert np.allclose(a_tokens @ head.weight.data.T + head.bias.data, pred, rtol=0,
                       atol=1e-14)
print("action_preds = tanh(predict_action(h[:, 1::3]));  state_preds, return_preds "
      "from h[:, 2::3]")

# %% [markdown]
# ### What each prediction can see, measured
#
# Perturb one input at timestep $t'$ and record which predictions at timestep $t$ move. Causality over the
# interleaved sequence gives the table above: `action_preds[t]` reacts to $\hat R_{t'}$ and $s_{t'}$ for $t' \le t$,
# but to actions only for $t' < t$ (the diagonal is exactly zero: $a_t$ comes after $s_t$). `state_preds[t]`
# reacts to $a_t$ too. These probes only run forward, so they run under `minidt.no_grad()` (as in PyTorch: no
# layer keeps a cache for a backward that will not come). `model.eval()` would switch dropout off, which is 0 here.

# %%
with minidt.no_grad():  # forward-only probes: nothing is kept for a backward
    one = {k: v[:1] for k, v in inputs.items()}  # the unpadded sequence
    base = model(**one)
    dep = {}
    for key, pred in (("returns_to_go", "action_preds"), ("states", "action_preds"),
                      ("actions", "action_preds"),
                      ("actions", "state_preds")):
        m = np.zeros((Tm, Tm))
        for tp in range(Tm):
            pert = dict(one)
            pert[key] = one[key].copy()
            pert[key][0, tp] += 0.5
            # T,dim
            moved = np.abs(getattr(model(**pert), pred) - getattr(base, pred))[0]
            m[:, tp] = moved.max(axis=-1)
        dep[(key, pred)] = m
assert np.all(np.triu(dep[("returns_to_go", "action_preds")], 1) == 0)
assert np.all(np.triu(dep[("states", "action_preds")], 1) == 0)
# the diagonal too: a_t is not visible
assert np.all(np.triu(dep[("actions", "action_preds")], 0) == 0)
# state_preds[t] does see a_t
assert np.all(np.diag(dep[("actions", "state_preds")]) > 0)
assert np.all(np.diag(dep[("states", "action_preds")]) > 0)
print("action_preds[t] sees R_<=t, s_<=t, a_<t;  state_preds[t] sees a_t: verified")

fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
for ax, ((key, pred), m) in zip(axes, dep.items()):
    ax.imshow(np.where(m > 0, np.log10(np.maximum(m, 1e-300)), np.nan), cmap="viridis")
    ax.set_title(f"{pred}[t] vs {key}[t']", fontsize=9)
    ax.set_xticks(range(Tm))
    ax.set_yticks(range(Tm))
    ax.set_xlabel("perturbed timestep t'")
    ax.set_ylabel("prediction timestep t")
fig.suptitle("log10 |change| (blank: exactly zero)", fontsize=10)
fig.tight_layout()
show(fig, FIGURES / "06_dt_dependencies.png")

# %% [markdown]
# The attention pattern of the first layer over the $3T$ tokens, labelled, for the padded sequence: the six
# padded tokens (two timesteps) are keys nobody real attends to.

# %%
with minidt.no_grad():
    out_att = model(**{k: v[1:] for k, v in inputs.items()}, output_attentions=True)
# 0-based, as the axes
labels = [f"{kind}{t}" for t in range(Tm) for kind in ("R", "s", "a")]
fig, ax = plt.subplots(figsize=(7, 6))
ax.imshow(out_att.attentions[0][0, 0], cmap="viridis")
ax.set_xticks(range(3 * Tm), labels, fontsize=6, rotation=90)
ax.set_yticks(range(3 * Tm), labels, fontsize=6)
ax.set_xlabel("key token")
ax.set_ylabel("query token")
ax.set_title("layer 0, head 0 attention over R s a tokens (first 2 steps padded)",
             fontsize=9)
fig.tight_layout()
show(fig, FIGURES / "06_dt_attention_tokens.png")
real = 3 * 2  # first real token
assert np.all(out_att.attentions[0][0, :, real:, :real] == 0.0)

# %% [markdown]
# ## 3. The reference's quirks, verified
#
# **Quirk 1: `position_ids` are all zero.** The reference passes `position_ids = 0` for every token, so GPT-2's
# position embedding adds the *same* vector `wpe[0]` to all $3T$ tokens: order comes only from the timestep
# embedding and the causal mask. Every other row of `wpe` is dead weight, and `wpe[0]`'s gradient is the sum over
# all tokens of the batch (a scatter-add with one index repeated $3BT$ times, tutorial 02).
#
# **Quirk 2: `embed_ln` uses $\epsilon = 10^{-5}$** whatever `layer_norm_epsilon` says (the reference constructs
# it with the default).
#
# **Quirk 3: `hidden_states` has $n_\text{layer} + 1$ entries**: the input of every block, then `ln_f`'s output
# (equal to `last_hidden_state`). The last block's raw output is not among them. (At init every LayerNorm has
# weight 1, bias 0, and then `ln_f(ln_f(z))` ≈ `ln_f(z)`, which hides an off-by-one; so the LayerNorms above were
# perturbed.)
#
# **Quirk 4: the timestep embedding is added to all three tokens** of its step, before `embed_ln`; its gradient
# row $t$ is the sum of the three tokens' gradients.
#
# Quirks 1, 2 and 4 together say: `hidden_states[0]` is exactly, in plain NumPy,

# %%
w = {name: p.data for name, p in model.named_parameters()}
out = model(**inputs, output_hidden_states=True)
# B,T,C: one table row per step, added to R, to s and to a (quirk 4)
time_emb = w["embed_timestep.weight"][inputs["timesteps"]]


def embed(name, v):
    return v @ w[f"embed_{name}.weight"].T + w[f"embed_{name}.bias"] + time_emb


r = embed("return", inputs["returns_to_go"])
s = embed("state", inputs["states"])
a = embed("action", inputs["actions"])
tokens = np.stack((r, s, a), axis=2).reshape(Bm, 3 * Tm, Cm)  # R0 s0 a0 R1 ...
by_hand = layernorm_forward(tokens, w["embed_ln.weight"], w["embed_ln.bias"], 1e-5)[0]
by_hand += w["encoder.wpe.weight"][0]
err = rel_error(out.hidden_states[0], by_hand)
print("hidden_states[0] rebuilt by hand (eps 1e-5, + wpe[0] everywhere): relative "
      f"error {err:.1e}")
assert err < 1e-14, err

config_eps = DecisionTransformerConfig(**(cfg | {"layer_norm_epsilon": 0.3}))
model_eps = DecisionTransformerModel(config_eps, dtype="float64", seed=0)
print(f"layer_norm_epsilon=0.3: embed_ln.eps = {model_eps.embed_ln.eps}, "
      f"encoder.h[0].ln_1.eps = {model_eps.encoder.h[0].ln_1.eps}, ln_f.eps = "
      f"{model_eps.encoder.ln_f.eps}")
assert model_eps.embed_ln.eps == 1e-5 and model_eps.encoder.ln_f.eps == 0.3
wrong = layernorm_forward(tokens, w["embed_ln.weight"], w["embed_ln.bias"], 0.3)[0]
wrong += w["encoder.wpe.weight"][0]
print("  (with eps 0.3 in embed_ln the tokens would differ by "
      f"{rel_error(wrong, by_hand):.1e})")

# %% [markdown]
# Quirk 1 from the forward side: change any row of `wpe` but row 0, and nothing moves; change row 0 and
# everything does. (Change it by a *random* vector: adding the same number to every feature of every token is
# invisible, since each LayerNorm subtracts the token's mean and `ln_f` ends the residual stream.)

# %%
wpe = model.encoder.wpe.weight
saved = wpe.data.copy()
wpe.data[1:] += rng.standard_normal(wpe.data[1:].shape)
moved_others = np.max(np.abs(model(**inputs).action_preds - out.action_preds))
wpe.data[:] = saved
wpe.data[0] += 0.1 * rng.standard_normal(Cm)
moved_row0 = np.max(np.abs(model(**inputs).action_preds - out.action_preds))
wpe.data[:] = saved
print(f"action_preds change when wpe[1:] changes: {moved_others:.1e}; when wpe[0] "
      f"changes: {moved_row0:.1e}")
assert moved_others == 0.0 and moved_row0 > 1e-4

# %% [markdown]
# ### Why a timestep embedding, and positions all zero
#
# GPT-2 on text adds a *position* embedding: token $i$ of the window gets `wpe[i]`. A Decision Transformer's
# window slides along an episode, and the slot a step occupies says nothing about the episode: early in a rollout
# the window is left-padded (the first real step sits in slot $K-1$, later in slot 0), and a training segment
# may be padded by any amount. What matters is *when* in the episode a step happened (the same pendulum angle
# means something else with 190 steps left than with 10), and that is the timestep embedding, `embed_timestep[t]`,
# shared by the three tokens of step $t$. With positions all zero (quirk 1) the model's output depends on the
# steps it sees and their timesteps, not on where they sit in the window; the order *within* a step ($\hat R$
# before $s$ before $a$) comes from the causal mask, and a token's kind from its own embedding layer.
#
# Checked: the same four real steps, alone in a window of 4 and left-padded into a window of 7, give the same
# predictions; shifting every timestep by one changes them.

# %%
real_steps = {k: v[:1] for k, v in inputs.items()}  # sequence 0: Tm real steps
window = {k: np.concatenate([np.zeros((1, 3) + v.shape[2:], v.dtype), v[:1]], axis=1)
          for k, v in inputs.items()}  # the same steps after 3 padded slots
window["attention_mask"][0, :3] = 0.0
alone, padded = model(**real_steps).action_preds, model(**window).action_preds[:, 3:]
later = model(**(real_steps | {"timesteps": real_steps["timesteps"] + 1})).action_preds
print(f"left-padded by 3 slots: max change {np.max(np.abs(padded - alone)):.1e};  "
      "timesteps + 1: "
      f"max change {np.max(np.abs(later - alone)):.1e}")
assert np.max(np.abs(padded - alone)) < 1e-12 and np.max(np.abs(later - alone)) > 1e-4

# %% [markdown]
# Quirk 3, block by block (mask and blocks as the encoder uses them):

# %%
L = config.n_layer
hs = out.hidden_states
assert len(hs) == L + 1
# B,3T: each step's mask for its R, s, a tokens
mask3 = np.repeat(inputs["attention_mask"], 3, axis=1)
bias = attention_bias(mask3, 3 * Tm, 3 * Tm, np.float64, hs[0])
keep = mask3.astype(bool)  # compare real tokens only: padded rows are finite garbage
z = None
for i, blk in enumerate(model.encoder.h):
    z = blk(hs[i], bias=bias)[0]
    if i + 1 < L:
        # entry i+1 = output of block i = input of block i+1
        assert np.max(np.abs(z - hs[i + 1])[keep]) < 1e-13
ln_f_z = model.encoder.ln_f(z)
assert np.max(np.abs(ln_f_z - hs[L])[keep]) < 1e-13
assert np.array_equal(hs[L], out.last_hidden_state)
gap = np.max(np.abs(z - hs[L])[keep])
print(f"hidden_states: {L + 1} entries = inputs of the {L} blocks, then ln_f(last "
      "block) = last_hidden_state; "
      f"the last block's raw output differs from the last entry by {gap:.2f}")
assert gap > 1e-2

# %% [markdown]
# ## 4. Backward through the whole model
#
# `model.backward(action_preds=..., state_preds=..., return_preds=...)` takes $\partial L / \partial$ of whichever
# predictions the loss used and runs every layer's backward in reverse: heads, `ln_f`, the blocks (section 1), the
# position embedding, `embed_ln`, then it un-interleaves the token gradients into $dR$, $ds$, $da$ for the three
# input embeddings and adds them for the timestep embedding (quirk 4).
#
# Spot-check it with finite differences (float64): the fake loss over all three predictions, zero upstream
# gradient at padded steps (as the training loss gives). A few entries of every parameter, plus all of `wpe`
# row 0 and two other `wpe` rows (quirk 1), and the first rows of the timestep table (sequence 1 starts at
# timestep 1 with two padded steps, so from row 3 on each row is used by both sequences and its gradient is a
# sum: tutorial 02's scatter-add).
#
# The error is measured against the largest entry of the *whole* gradient array, not of the few sampled entries:
# those may all be legitimately zero. The key third of `c_attn.bias` is such a case: adding one vector to every
# key adds the same number to every score of a query's row, which softmax ignores, so its gradient is exactly 0
# and finite differences return round-off noise of about $10^{-11}$.

# %%
real = inputs["attention_mask"][:, :, None]
g = {k: rng.standard_normal(getattr(out, k).shape) * real
     for k in ("action_preds", "state_preds", "return_preds")}
model.zero_grad()
model(**inputs)
model.backward(**g)


def model_loss():
    o = model(**inputs)
    return sum(np.sum(getattr(o, k) * g[k]) for k in g)


n_spot = 3 if SMOKE else 8
worst = ("", 0.0)
for name, p in model.named_parameters():
    if p.grad is None:
        print(f"{name}: no gradient (unused: the model feeds embeddings, not token "
              "ids; vocab_size is 1)")
        continue
    flat = rng.choice(p.data.size, size=min(n_spot, p.data.size), replace=False)
    entries = [np.unravel_index(i, p.shape) for i in flat]
    if name == "encoder.wpe.weight":
        entries = [(row, c) for row in (0, 1, 5) for c in range(Cm)]
    if name == "embed_timestep.weight":
        entries = [(t, c) for t in range(Tm) for c in range(4)]
    num = numerical_grad(model_loss, p.data, entries=entries)
    idx = tuple(np.array(entries).T)  # one index array per axis
    # scale: the whole array's
    e = float(np.max(np.abs(p.grad[idx] - num[idx])) / np.max(np.abs(p.grad)))
    worst = max(worst, (name, e), key=lambda t: t[1])
print(f"model backward vs finite differences, spot check: worst {worst[0]} at "
      f"{worst[1]:.1e}")
assert worst[1] < 1e-8, worst
gw = model.encoder.wpe.weight.grad
print(f"wpe.grad: row 0 norm {np.linalg.norm(gw[0]):.2e}, all other rows exactly zero: "
      f"{np.all(gw[1:] == 0)}")
assert np.all(gw[1:] == 0) and np.linalg.norm(gw[0]) > 0

# %% [markdown]
# **Summary.** A pre-LN block's backward adds the gradient of each residual branch to the gradient flowing
# straight down the stream. The Decision Transformer interleaves $\hat R_t, s_t, a_t$ into $3T$ tokens, predicts
# $a_t$ from the $s_t$ token and the next state and return from the $a_t$ token. Matching the reference means
# copying its quirks: all-zero position ids (`wpe[0]` everywhere), `embed_ln` at $\epsilon = 10^{-5}$,
# $n_\text{layer} + 1$ hidden states ending in `ln_f`'s output, and the timestep embedding on all three tokens.
# Tutorial 07 compares all of it, output by output and gradient by gradient, with transformers itself.

# %% [markdown]
# **Graded.** `minidt assignment start gpt2_block DIR` asks for `block_forward` / `block_backward` (the block from
# the earlier pieces, parameters as a dict); `minidt assignment start dt_embedding DIR` for the token layout of
# section 2, `dt_embed_forward` / `dt_embed_backward`, interleaving and back. `minidt grade DIR/NAME.py` checks
# them.
#
# ## Exercises
#
# **1. Predict, then run.** Swap two timesteps' *tokens* (steps 1 and 2 of a sequence, all three inputs and the
# timesteps together). Which `action_preds` change: none, those from step 1 on, or all?
#
# **2. Plant a bug, watch the check catch it.** Read `action_preds` off the *action* tokens, `h[:, 2::3]`, instead
# of the state tokens. Which line of the dependency check fails, and why is this bug a cheat in training?
#
# **3. Derive before the reveal.** With position ids all zero, how does the model tell the return token of a
# step from its state token, and the tokens of step $t$ from those of step $t + 1$?
#
# ### Solutions
#
# Each solution is one cell, collapsed in the book; in the script, everything below this line is the solutions.

# %% tags=["hide-cell"]
# Solution 1: none before step 1 (causality), and most at steps 1 and 2, which now see
# other tokens and predict for another state. Later steps see the same *set* of tokens
# in another order. One attention layer could not tell (it sums over the keys it may
# see, and with positions all zero nothing marks a key's place), but from the second
# layer on a key is what its token computed in the layer below, and the swapped tokens
# saw different histories there: later steps move too, by less.
swapped = {k: v[:1].copy() for k, v in inputs.items() if v is not None}
for key in ("states", "actions", "returns_to_go", "timesteps"):
    swapped[key][0, [1, 2]] = swapped[key][0, [2, 1]]
moved = np.abs(model(**swapped).action_preds - model(**one).action_preds)
moved = moved[0].max(axis=-1)
print("largest change of action_preds per step:", np.array2string(moved, precision=2))
assert moved[0] == 0.0 and moved[1:3].min() > 0.0

# %% tags=["hide-cell"]
# Solution 2: the check that action_preds[t] does not see a_t (the zero diagonal) fails:
# the action token a_t holds a_t itself, so the model could copy its input. In training
# the loss would fall towards zero by copying, and in a rollout the a_t slot holds a
# zero placeholder: the model would act on nothing.
h = model(**one).last_hidden_state
lin = model.predict_action[0]


def read_at_action_tokens(inp):
    h = model(**inp).last_hidden_state[:, 2::3]
    return np.tanh(h @ lin.weight.data.T + lin.bias.data)


base_bug = read_at_action_tokens(one)
pert = dict(one)
pert["actions"] = one["actions"].copy()
pert["actions"][0, 2] += 0.5  # change a_2
sees_own_action = np.abs(read_at_action_tokens(pert) - base_bug)[0, 2].max()
print(f"with the bug, action_preds[2] changes by {sees_own_action:.1e} when a_2 "
      "changes (must be exactly 0)")
assert sees_own_action > 0.0

# %% [markdown]
# :::{dropdown} Solution 3
# By what the tokens are made of and by the causal order. A return token is `embed_return(R)` and a state token
# `embed_state(s)`: different layers, so different directions in the hidden space, and the kind of a token is in
# its vector. The three tokens of step $t$ share `embed_timestep[t]`, which differs from step $t+1$'s; and the
# causal mask orders the sequence, since token $i$ sees exactly the tokens before it. Nothing needs a position:
# which is why a left-padded window (section "Why a timestep embedding") changes nothing.
# :::

# %% [markdown]
# #### After you have done assignment 4
#
# `Block.forward` and `Block.backward` as minidt ships them: the reference solution of assignment 4 (`minidt
# assignment start gpt2_block DIR`). Collapsed in the book: read it once your own passes `minidt grade`.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the code (after assignment 4)"}
print(inspect.getsource(Block.forward))
print(inspect.getsource(Block.backward))

# %% [markdown]
# #### After you have done assignment 5
#
# The model's token embedding and interleaving, forward and backward, as minidt ships them: the reference solution
# of assignment 5 (`minidt assignment start dt_embedding DIR`). Collapsed in the book: read it once your own passes
# `minidt grade`.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Show the code (after assignment 5)"}
# forward's first half, shared with get_action
source = inspect.getsource(DecisionTransformerModel._tokens)
print(source[source.index("        time = "):])
source = inspect.getsource(DecisionTransformerModel.forward)
print(source[source.index("        enc = "):source.index("        self.shape")])
source = inspect.getsource(DecisionTransformerModel.backward)
print(source[source.index("        dh = xp.reshape"):])
