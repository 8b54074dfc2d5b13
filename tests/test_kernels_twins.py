"""Each kernel of minidt/kernels against its NumPy twin, on odd shapes (C not a multiple of 32, T = 1, a fully
padded row), float32 and float64; then a training step through the layer functions' dispatch.

Two places run them (the `kernel_device` fixture, conftest.py):
- [gpu]: CuPy on a GPU, the kernel path on. The proof; skipped, saying so, where no GPU is selected.
- [cpu_shim]: the same .cu sources compiled by g++ against tests/kernel_shim/cuda_shim.h and run serially on NumPy
  arrays through the unchanged launchers: the kernels' arithmetic, indexing, reductions and the launchers'
  argument types, checked in CI. Not the GPU: no concurrency, no timing, no NVRTC (test_kernels.py has that).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import rel_error
from minidt import to_numpy
from minidt.kernels import switch
from minidt.backend import Generator
from minidt.layers.activations import ACTIVATIONS, bias_act_backward, bias_act_forward
from minidt.layers.attention import attention_bias, softmax_backward, softmax_forward
from minidt.layers.dropout import hash_keep
from minidt.layers.embedding import embedding_backward
from minidt.layers.layernorm import layernorm_backward, layernorm_forward
from minidt.losses import masked_mse
from minidt.optim import adamw_step, clip_grad_norm

DTYPES = ("float32", "float64")
TOL = {"float32": 2e-6, "float64": 1e-13}  # max |kernel - twin| / max |twin|: a few ulps of summation order


def close(got, want, dtype: str, what: str, tol: float | None = None) -> None:
    e = rel_error(to_numpy(got), want)
    assert e <= (tol or TOL[dtype]), f"{what}: relative error {e:.3g} > {tol or TOL[dtype]}"


def normal(rng, shape, dtype, loc=0.0):
    return (loc + rng.normal(size=shape)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 1, 45), (2, 7, 100), (1, 3, 128)])
def test_layernorm(kernel_device, dtype, shape):
    rng, C = np.random.default_rng(0), shape[-1]
    x, dout = normal(rng, shape, dtype, 3.0), normal(rng, shape, dtype)
    w, b = normal(rng, C, dtype, 1.0), normal(rng, C, dtype)
    out, cache = layernorm_forward(x, w, b, 1e-5)
    dx, dw, db = layernorm_backward(dout, cache)
    k, a = kernel_device.launchers.layernorm, kernel_device.asarray
    kout, kcache = k.forward(a(x), a(w), a(b), 1e-5)
    for got, want, what in ((kout, out, "out"), (kcache[2], cache[2], "mean"), (kcache[3], cache[3], "rstd")):
        assert got.shape == want.shape
        close(got, want, dtype, what)
    for got, want, what in zip(k.backward(a(dout), kcache), (dx, dw, db), ("dx", "dweight", "dbias")):
        close(got, want, dtype, what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,H,Tq,Tk,p,padded", [(3, 2, 5, 5, 0.1, True), (2, 2, 1, 7, 0.0, True),
                                                (1, 3, 4, 6, 0.2, False), (2, 1, 33, 33, 0.1, True)])
def test_attention_softmax(kernel_device, dtype, B, H, Tq, Tk, p, padded):
    """scale, the causal and padding bias (batch row 0 fully padded; one bias for every row when not padded),
    softmax and dropout; backward with the mask drawn again. Tq < Tk: queries after cached keys."""
    rng = np.random.default_rng(1)
    scores, dprobs = normal(rng, (B, H, Tq, Tk), dtype), normal(rng, (B, H, Tq, Tk), dtype)
    mask = None
    if padded:
        mask = np.ones((B, Tk))
        mask[0] = 0  # a fully padded row: finite garbage, never NaN
        mask[-1, :Tk // 2] = 0  # left padding
    bias = attention_bias(mask, Tq, Tk, np.dtype(dtype), scores)
    gen = Generator(7)
    gen.device_offset = 1000
    x = scores * 0.37
    x += bias
    probs = softmax_forward(x)
    m = (hash_keep(probs.shape, p, gen.device_seed, 1000, probs).astype(dtype) * np.array(1 / (1 - p), dtype)
         if p else np.ones_like(probs))
    dscores = softmax_backward(dprobs * m, probs) * np.array(0.37, dtype)
    a = kernel_device.asarray
    kprobs, kdropped, hm = kernel_device.launchers.softmax.forward(a(scores), a(bias), 0.37, p, gen)
    assert gen.device_offset == 1000 + (probs.size if p else 0)
    assert np.isfinite(to_numpy(kprobs)).all()
    close(kprobs, probs, dtype, "probs")
    close(kdropped, probs * m, dtype, "dropped probs")
    close(kernel_device.launchers.softmax.backward(a(dprobs), kprobs, hm, 0.37), dscores, dtype, "dscores")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_bias_activation(kernel_device, dtype, name):
    rng = np.random.default_rng(2)
    h, dout, b = normal(rng, (3, 1, 45), dtype), normal(rng, (3, 1, 45), dtype), normal(rng, 45, dtype)
    out, cache = bias_act_forward(h.copy(), b, name)
    dh, db = bias_act_backward(dout, cache)
    k, a = kernel_device.launchers.bias_act, kernel_device.asarray
    kout, kcache = k.forward(a(h), a(b), name)
    close(kout, out, dtype, f"{name} forward")
    kdh, kdb = k.backward(a(dout), kcache)
    close(kdh, dh, dtype, f"{name} dh")
    close(kdb, db, dtype, f"{name} dbias")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [True, False])
def test_residual_dropout(kernel_device, dtype, with_residual):
    """out = residual + dropout(y), the mask hash_keep's at the generator's offset, which advances by y's size;
    backward draws the same mask."""
    rng = np.random.default_rng(3)
    y, r, dout = (normal(rng, (3, 1, 45), dtype) for _ in range(3))
    gen = Generator(11)
    gen.device_offset = 12345
    m = hash_keep(y.shape, 0.1, gen.device_seed, 12345, y).astype(dtype) * np.array(1 / 0.9, dtype)
    a, k = kernel_device.asarray, kernel_device.launchers.residual
    out, hm = k.forward(a(y), a(r) if with_residual else None, 0.1, gen)
    assert gen.device_offset == 12345 + y.size
    close(out, (r if with_residual else 0) + y * m, dtype, "out")
    close(k.backward(a(dout), hm), dout * m, dtype, "dy")


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_mse(kernel_device, dtype):
    rng = np.random.default_rng(4)
    pred, target = normal(rng, (4, 5, 3), dtype), normal(rng, (4, 5, 3), dtype)
    mask = np.ones((4, 5), dtype)
    mask[1] = 0  # a fully padded row
    mask[2, :3] = 0
    pred[1, 2, 0] = np.nan  # a padded prediction may be garbage: where, not multiply
    loss, dpred = masked_mse(pred, target, mask)
    a = kernel_device.asarray
    kloss, kdpred = kernel_device.launchers.mse.masked_mse(a(pred), a(target), a(mask))
    assert kloss.shape == () and np.isfinite(to_numpy(kdpred)).all()
    close(kloss, loss, dtype, "loss")
    close(kdpred, dpred, dtype, "dpred")
    kloss, _ = kernel_device.launchers.mse.masked_mse(a(pred), a(target), a(np.zeros_like(mask)))
    assert np.isnan(to_numpy(kloss))  # all padding: NaN, as the twin (and torch.mean of nothing)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_backward(kernel_device, dtype):
    """Repeated ids sum, untouched rows are 0, and the sums are added in token order: the twin's bits exactly."""
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 40, size=(3, 7))
    ids[0, :3] = 17
    dout = normal(rng, (3, 7, 45), dtype)
    want = embedding_backward(dout, (ids.reshape(-1), (50, 45)))
    got = kernel_device.launchers.embedding.backward(kernel_device.asarray(dout.reshape(-1, 45)),
                                                     kernel_device.asarray(ids.reshape(-1)), 50)
    np.testing.assert_array_equal(to_numpy(got), want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("max_norm", [0.25, 1e6])
def test_grad_norm_and_adamw(kernel_device, dtype, max_norm):
    rng = np.random.default_rng(6)
    n = 20_011
    g, param, m = normal(rng, n, dtype), normal(rng, n, dtype), normal(rng, n, dtype) * 0.1
    v = np.abs(normal(rng, n, dtype)) * 0.01
    (clipped,), norm = clip_grad_norm([g], max_norm)
    a, k = kernel_device.asarray, kernel_device.launchers.adamw
    for _ in range(2):  # the second call finds the finished-blocks count reset by the first
        got = to_numpy(k.grad_norm(a(g), max_norm, 1e-6))
        close(got[0], norm, dtype, "norm")
        close(got[0:1] * 0 + g[:1] * got[1], clipped[:1], dtype, "clip coefficient")
    want = adamw_step(param, clipped, m, v, 3, 1e-3, 0.9, 0.999, 1e-8, 1e-2)
    for got, w, what in zip(k.adamw(a(param), a(clipped), a(m), a(v), 3, 1e-3, 0.9, 0.999, 1e-8, 1e-2), want,
                            ("param", "exp_avg", "exp_avg_sq")):
        close(got, w, dtype, what)


# --- through the layer functions ------------------------------------------------------------------------------------

def step_on_kernels(kernel_device, monkeypatch, config, batch: dict, steps: int = 2, seed: int = 0):
    """`steps` training steps (train_step: forward, loss, backward, clip, AdamW) with every layer function routed
    to the kernels, on kernel_device; returns the model, the losses and norms, and which kernels launched."""
    from minidt import DecisionTransformerModel
    from minidt.optim import AdamW, LinearWarmup, param_groups_no_decay
    from minidt.train import train_step

    launched = set()
    for module in vars(kernel_device.launchers).values():
        def counting(name, kernel, dtype, f=module.function):
            launched.add(kernel)
            return f(name, kernel, dtype)
        monkeypatch.setattr(module, "function", counting)
    backend = "numpy"
    if kernel_device.name == "cpu_shim":  # NumPy arrays take the kernel path, through the shim
        monkeypatch.setattr(switch, "DEVICE_MODULE", "numpy")
        monkeypatch.setattr(switch, "ENABLED", True)
    else:
        backend = "cupy"
    model = DecisionTransformerModel(config, dtype="float64", seed=seed, backend=backend)
    opt = AdamW(param_groups_no_decay(model.named_parameters(), 1e-4), lr=1e-3, weight_decay=1e-4)
    sched = LinearWarmup(opt, 1)
    results = [tuple(float(to_numpy(r)) for r in train_step(model, opt, sched, batch, 0.25)) for _ in range(steps)]
    return model, results, launched


def reference_steps(config, batch: dict, steps: int = 2, seed: int = 0):
    """The same steps on NumPy: the twins."""
    from minidt import DecisionTransformerModel
    from minidt.optim import AdamW, LinearWarmup, param_groups_no_decay
    from minidt.train import train_step

    model = DecisionTransformerModel(config, dtype="float64", seed=seed, backend="numpy")
    opt = AdamW(param_groups_no_decay(model.named_parameters(), 1e-4), lr=1e-3, weight_decay=1e-4)
    sched = LinearWarmup(opt, 1)
    return model, [tuple(float(r) for r in train_step(model, opt, sched, batch, 0.25)) for _ in range(steps)]


def small_config(**kw):
    from minidt import DecisionTransformerConfig

    return DecisionTransformerConfig(**{**dict(state_dim=3, act_dim=2, hidden_size=36, n_layer=2, n_head=2,
                                               max_ep_len=50, activation_function="gelu", action_tanh=True,
                                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), **kw})


def test_training_steps_on_the_kernel_path_match_numpy(kernel_device, monkeypatch):
    """Two float64 training steps, no dropout, every kernel on the path: loss, gradient norm, every gradient and
    every parameter after AdamW as NumPy's to 1e-10 (gpu_check's parity bound). The fully padded row of the batch
    (row 0, besides left padding) must not poison anything."""
    from minidt.parity import make_inputs

    config = small_config()
    batch = make_inputs(config, 3, 4, seed=0)
    batch["attention_mask"][0] = 0  # fully padded: it carries no loss, and must not bring a NaN
    batch["attention_mask"][0, -1] = 1  # ...but the loss needs one real step somewhere in the row
    batch["rewards"] = None
    ref, ref_results = reference_steps(config, batch)
    model, results, launched = step_on_kernels(kernel_device, monkeypatch, config, batch)
    expected = {"layernorm_forward", "layernorm_backward", "column_sum", "softmax_forward", "softmax_backward",
                "bias_act_forward", "bias_act_backward", "mse_partials", "mse_finish", "embedding_backward"}
    if kernel_device.name == "gpu":  # the optimizer's flat-buffer path is a device array's (NumPy: per tensor)
        expected |= {"grad_norm", "adamw"}
    assert launched >= expected
    np.testing.assert_allclose(results, ref_results, rtol=1e-10)
    for (name, p), q in zip(ref.named_parameters(), model.parameters()):
        assert rel_error(to_numpy(q.data), p.data) <= 1e-10, name


def test_dropout_on_the_kernel_path_is_seeded_and_differs_from_numpy(kernel_device, monkeypatch):
    """With dropout the kernel path draws from the hash: two runs from one seed agree bit for bit, and the masks
    are not NumPy's (the loss differs)."""
    from minidt.parity import make_inputs

    config = small_config(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    batch = make_inputs(config, 3, 4, seed=1)
    batch["rewards"] = None
    _, ref_results = reference_steps(config, batch)
    _, a, launched = step_on_kernels(kernel_device, monkeypatch, config, batch)
    _, b, _ = step_on_kernels(kernel_device, monkeypatch, config, batch)
    assert {"residual_dropout_forward", "dropout_backward"} <= launched
    assert a == b and a != ref_results
