"""A float32 training step stays float32: forward, masked-MSE loss (all three heads), backward, clip_grad_norm_,
AdamW.

One stray float64 (a Python float that NumPy promotes, a float64 random draw, a float64 constant array) doubles
the memory traffic of everything downstream and silently halves the speed, so this is checked everywhere it can
be: every output, the loss, every gradient, every optimizer moment and every parameter after the step; and on the
strict backend, every array the step creates along the way (array_api_strict builds each result through one
private constructor, which the test wraps)."""

from __future__ import annotations

import numpy as np

from minidt import DecisionTransformerConfig, DecisionTransformerModel
from minidt.backend import dtype_name, get_backend
from minidt.losses import dt_loss
from minidt.optim import AdamW, clip_grad_norm_

CONFIG = dict(state_dim=3, act_dim=2, hidden_size=16, n_layer=2, n_head=2, max_ep_len=50, resid_pdrop=0.1,
              embd_pdrop=0.1, attn_pdrop=0.1)


def float32_batch(B: int = 3, K: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((B, K), np.float32)
    mask[0, :2] = 0.0  # one left-padded row
    return {"states": rng.normal(size=(B, K, 3)).astype(np.float32),
            "actions": rng.uniform(-1, 1, size=(B, K, 2)).astype(np.float32),
            "returns_to_go": rng.normal(size=(B, K, 1)).astype(np.float32),
            "timesteps": rng.integers(0, 50, size=(B, K)),
            "attention_mask": mask}


def train_step(model, opt, x: dict) -> tuple:
    out = model(**x)
    loss, grads = dt_loss(out, x["states"], x["actions"], x["returns_to_go"], x["attention_mask"],
                          state_weight=0.5, return_weight=0.5)  # every head gets a gradient
    model.backward(*grads)
    norm = clip_grad_norm_(model.parameters(), 0.25)
    return out, loss, grads, norm


def assert_float32(name: str, a) -> None:
    assert dtype_name(a.dtype) == "float32", f"{name}: expected float32, got {dtype_name(a.dtype)}"


def check_step(backend) -> None:
    b = get_backend(backend)  # a Backend or a name
    model = DecisionTransformerModel(DecisionTransformerConfig(**CONFIG), dtype="float32", seed=0, backend=backend)
    model.train()
    x = {k: b.asarray(v) for k, v in float32_batch().items()}
    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    for step in range(2):  # the second step runs with moments that already exist
        out, loss, grads, norm = train_step(model, opt, x)
        for name in ("state_preds", "action_preds", "return_preds", "last_hidden_state"):
            assert_float32(name, getattr(out, name))
        assert_float32("loss", loss)
        for name, g in zip(("d state_preds", "d action_preds", "d return_preds"), grads):
            assert_float32(name, g)
        assert_float32("clip norm", norm)
        for name, p in model.named_parameters():
            assert p.grad is not None or name == "encoder.wte.weight", name  # inputs_embeds bypass wte
            if p.grad is not None:
                assert_float32(f"{name}.grad", p.grad)
        opt.step()
        opt.zero_grad()
        for name, p in model.named_parameters():
            assert_float32(name, p.data)
        for p, state in opt.state.items():
            assert_float32("exp_avg", state["exp_avg"])
            assert_float32("exp_avg_sq", state["exp_avg_sq"])
    assert len(opt.state) == len(model.parameters()) - 1


def test_float32_step(backend):
    check_step(backend)


def test_no_float64_intermediate_on_strict(monkeypatch):
    """Every array created during the step, not just the ones we can see at the end."""
    from array_api_strict._array_object import Array

    created = Array._new.__func__
    seen = []

    def checked(cls, x, /, device):
        if np.asarray(x).dtype == np.float64:
            import traceback

            seen.append("".join(traceback.format_stack(limit=6)[:-1]))
        return created(cls, x, device=device)

    monkeypatch.setattr(Array, "_new", classmethod(checked))
    check_step("strict")
    assert not seen, f"{len(seen)} float64 arrays created in a float32 step:\n" + "\n".join(seen)


def test_the_check_can_fail(monkeypatch):
    """The wrapper above does see float64: a float64 array created on the strict backend is reported."""
    from array_api_strict._array_object import Array

    created = Array._new.__func__
    seen = []
    monkeypatch.setattr(Array, "_new", classmethod(
        lambda cls, x, /, device: (seen.append(np.asarray(x).dtype), created(cls, x, device=device))[1]))
    b = get_backend("strict")
    b.xp.ones((2,), dtype=b.xp.float32, device=b.device) * b.xp.ones((2,), dtype=b.xp.float64, device=b.device)
    assert np.dtype(np.float64) in seen


def test_float64_model_stays_float64(backend):
    """The other side: a float64 model is not quietly computed in float32 anywhere visible."""
    b = backend
    model = DecisionTransformerModel(DecisionTransformerConfig(**CONFIG), dtype="float64", seed=0, backend=backend)
    model.train()
    x = {k: b.asarray(v) for k, v in float32_batch().items()}
    x["actions"] = b.asarray(float32_batch()["actions"], dtype="float64")
    out, loss, _, _ = train_step(model, AdamW(model.parameters()), x)
    assert dtype_name(out.action_preds.dtype) == dtype_name(loss.dtype) == "float64"
    assert all(dtype_name(p.grad.dtype) == "float64" for p in model.parameters() if p.grad is not None)
