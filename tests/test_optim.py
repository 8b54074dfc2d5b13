"""AdamW, clip_grad_norm_ and LinearWarmup step for step against torch.optim.AdamW, torch.nn.utils.clip_grad_norm_
and LambdaLR, in float64; checkpoint round trips; float32 stays float32; on every backend (a device backend updates
one flat buffer, NumPy one tensor at a time: the same bits)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import rel_error
from minidt.backend import get_backend, to_numpy
from minidt.layers.module import Parameter
from minidt.optim import AdamW, LinearWarmup, clip_grad_norm_, param_groups_no_decay

SHAPES = [(6, 5), (5,), (3, 4, 2), (4,)]  # the first two decay, the last two do not
HP = dict(lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
WARMUP, MAX_NORM = 7, 2.0


def grads_at(step: int, rng: np.random.Generator) -> list[np.ndarray | None]:
    """Random gradients, some large enough to clip and some not; parameter 1 has none every third step and
    parameter 3 none before step 5 (its moments start late, as a head trained only later would)."""
    scale = 3.0 if step % 2 else 0.05
    gs = [rng.normal(size=s) * scale for s in SHAPES]
    if step % 3 == 1:
        gs[1] = None
    if step < 5:
        gs[3] = None
    return gs


def make_ours(backend, init, dtype="float64"):
    b = get_backend(backend)  # a Backend or a name
    params = [Parameter(b.asarray(x, dtype=dtype)) for x in init]
    opt = AdamW([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}], **HP)
    return params, opt, LinearWarmup(opt, WARMUP)


def run_ours(params, opt, sched, steps, rng, backend, dtype="float64"):
    """`steps` training steps: set grads, clip, step, schedule. Returns the norms clip_grad_norm_ reported."""
    b, norms = get_backend(backend), []
    for step in steps:
        opt.zero_grad()
        for p, g in zip(params, grads_at(step, rng)):
            if g is not None:
                p.grad = b.asarray(g, dtype=dtype)
        norms.append(float(to_numpy(clip_grad_norm_(params, MAX_NORM))))
        opt.step()
        sched.step()
    return norms


def test_adamw_clip_warmup_match_torch(torch, backend):
    init = [np.random.default_rng(1).normal(size=s) for s in SHAPES]
    params, opt, sched = make_ours(backend, init)
    ref = [torch.nn.Parameter(torch.tensor(x)) for x in init]
    topt = torch.optim.AdamW([{"params": ref[:2]}, {"params": ref[2:], "weight_decay": 0.0}], **HP)
    tsched = torch.optim.lr_scheduler.LambdaLR(topt, lambda steps: min((steps + 1) / WARMUP, 1))
    assert sched.get_last_lr() == tsched.get_last_lr()

    rng_ours, rng_ref = np.random.default_rng(2), np.random.default_rng(2)
    worst_p = worst_m = worst_norm = 0.0
    for step in range(25):
        norm = run_ours(params, opt, sched, [step], rng_ours, backend)[0]
        topt.zero_grad()
        for t, g in zip(ref, grads_at(step, rng_ref)):
            t.grad = None if g is None else torch.tensor(g)
        tnorm = torch.nn.utils.clip_grad_norm_(ref, MAX_NORM).item()
        topt.step()
        tsched.step()

        worst_norm = max(worst_norm, abs(norm - tnorm) / tnorm)
        assert sched.get_last_lr() == tsched.get_last_lr()
        for p, t in zip(params, ref):
            worst_p = max(worst_p, rel_error(to_numpy(p.data), t.detach().numpy()))
            if t in topt.state:
                s, ts = opt.state[p], topt.state[t]
                assert s["step"] == ts["step"].item()
                worst_m = max(worst_m, rel_error(to_numpy(s["exp_avg"]), ts["exp_avg"].numpy()),
                              rel_error(to_numpy(s["exp_avg_sq"]), ts["exp_avg_sq"].numpy()))
            else:
                assert p not in opt.state
    print(f"\nworst relative error vs torch ({backend.name}): params {worst_p:.1e}, moments {worst_m:.1e}, "
          f"norms {worst_norm:.1e}")
    assert worst_p <= 1e-10 and worst_m <= 1e-10 and worst_norm <= 1e-10
    assert opt.state[params[3]]["step"] == 20  # no grad for steps 0-4: never stepped then


def test_state_dict_round_trip_resumes_exactly(backend):
    init = [np.random.default_rng(3).normal(size=s) for s in SHAPES]
    params, opt, sched = make_ours(backend, init)
    run_ours(params, opt, sched, range(20), np.random.default_rng(4), backend)

    params2, opt2, sched2 = make_ours(backend, init)
    rng = np.random.default_rng(4)
    run_ours(params2, opt2, sched2, range(10), rng, backend)
    saved_params = [np.array(to_numpy(p.data)) for p in params2]
    saved_opt, saved_sched = opt2.state_dict(), sched2.state_dict()
    moment = np.array(saved_opt["state"][0]["exp_avg"])
    run_ours(params2, opt2, sched2, range(10, 12), np.random.default_rng(9), backend)  # must not touch the save
    np.testing.assert_array_equal(saved_opt["state"][0]["exp_avg"], moment)

    # a fresh process: new parameters from the saved values, new optimizer and scheduler, then load. State keys
    # as strings and betas as a list, as after a JSON round trip.
    params3, opt3, sched3 = make_ours(backend, saved_params)
    saved_opt["state"] = {str(k): v for k, v in saved_opt["state"].items()}
    for g in saved_opt["param_groups"]:
        g["betas"] = list(g["betas"])
    opt3.load_state_dict(saved_opt)
    sched3.load_state_dict(saved_sched)
    assert sched3.get_last_lr() == [g["lr"] for g in saved_opt["param_groups"]]
    run_ours(params3, opt3, sched3, range(10, 20), rng, backend)

    for p, q in zip(params, params3):
        np.testing.assert_array_equal(to_numpy(p.data), to_numpy(q.data))
    for p, q in zip(params, params3):
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(to_numpy(opt.state[p][key]), to_numpy(opt3.state[q][key]))
        assert opt.state[p]["step"] == opt3.state[q]["step"]
    assert sched.get_last_lr() == sched3.get_last_lr() and sched.last_epoch == sched3.last_epoch == 20


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flat_buffers_give_numpys_bits(dtype, device_backend):
    """A device backend's AdamW runs adamw_step once per group over the concatenated parameters, NumPy once per
    tensor: the same operations on every element, so the same bits (on strict, which is NumPy underneath; a GPU
    rounds its own way). Parameters that skip steps or start late (their own step counts, their own buffers) and
    parameters replaced between steps (as loading a checkpoint into the model does) are handled."""
    b = device_backend
    init = [np.random.default_rng(1).normal(size=s) for s in SHAPES]
    (ps, opt, _), (qs, opt_q, _) = make_ours("numpy", init, dtype), make_ours(b, init, dtype)
    rng = np.random.default_rng(2)
    for step in range(12):
        grads = grads_at(step, rng)
        if step == 6:  # replaced from outside, as a checkpoint load does
            ps[0].data, qs[0].data = np.array(ps[0].data), b.asarray(to_numpy(qs[0].data))
        for p, q, g in zip(ps, qs, grads):
            p.grad, q.grad = (None, None) if g is None else (np.asarray(g, dtype), b.asarray(g, dtype))
        opt.step()
        opt_q.step()
        for p, q in zip(ps, qs):
            got, want = to_numpy(q.data), p.data
            assert (np.array_equal(got, want) if b.name != "cupy" else rel_error(got, want) <= 1e-12), step
    assert [opt_q.state[q]["step"] for q in qs] == [opt.state[p]["step"] for p in ps] == [12, 8, 12, 7]


def test_load_state_dict_rejects_other_groups():
    b = get_backend("numpy")
    opt = AdamW([Parameter(b.zeros((2,), "float64"))])
    other = AdamW([Parameter(b.zeros((2,), "float64")), Parameter(b.zeros((3,), "float64"))])
    with pytest.raises(ValueError, match="groups do not match"):
        opt.load_state_dict(other.state_dict())


def test_float32_stays_float32(backend):
    b = backend
    init = [np.random.default_rng(5).normal(size=s) for s in SHAPES]
    params, opt, sched = make_ours(backend, init, dtype="float32")
    run_ours(params, opt, sched, range(6), np.random.default_rng(6), backend, dtype="float32")
    norm = clip_grad_norm_(params, MAX_NORM)
    assert norm.dtype == b.xp.float32
    for p in params:
        assert p.data.dtype == p.grad.dtype == b.xp.float32
        assert opt.state[p]["exp_avg"].dtype == opt.state[p]["exp_avg_sq"].dtype == b.xp.float32
    loaded = AdamW([{"params": params[:2]}, {"params": params[2:]}])
    loaded.load_state_dict(opt.state_dict())  # host float32 back to the device as float32
    assert all(s["exp_avg"].dtype == b.xp.float32 for s in loaded.state.values())


def test_clip_grad_norm_edge_cases_match_torch(torch, backend):
    b = backend
    # below the threshold: norm returned, grads scaled by exactly 1
    p, q, r = (Parameter(b.zeros((3,), "float64")) for _ in range(3))
    p.grad, q.grad = b.asarray(np.array([0.3, 0.0, 0.4])), b.asarray(np.zeros(3))
    norm = clip_grad_norm_([p, q, r], 1.0)
    assert float(to_numpy(norm)) == 0.5 and np.array_equal(to_numpy(p.grad), [0.3, 0.0, 0.4]) and r.grad is None
    assert clip_grad_norm_([r], 1.0) == 0.0  # nothing to clip
    assert float(to_numpy(clip_grad_norm_(p, 0.25))) == 0.5  # a single Parameter, as torch takes a single tensor

    # non-finite: returned as is, grads scaled by it, as torch does with error_if_nonfinite=False
    for bad in (np.inf, np.nan):
        g1, g2 = np.array([1.0, bad]), np.array([2.0, 3.0])
        p.grad, q.grad = b.asarray(g1.copy()), b.asarray(g2.copy())
        t1, t2 = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
        t1.grad, t2.grad = torch.tensor(g1), torch.tensor(g2)
        with np.errstate(invalid="ignore"):  # inf * 0 = NaN, on purpose
            norm = clip_grad_norm_([p, q], 1.0)
        tnorm = torch.nn.utils.clip_grad_norm_([t1, t2], 1.0)
        np.testing.assert_array_equal(to_numpy(norm), tnorm.numpy())
        np.testing.assert_array_equal(to_numpy(p.grad), t1.grad.numpy())
        np.testing.assert_array_equal(to_numpy(q.grad), t2.grad.numpy())


def test_param_groups_no_decay():
    b = get_backend("numpy")
    shapes = {"encoder.h.0.ln_1.weight": (8,), "encoder.h.0.attn.c_attn.weight": (8, 24),
              "encoder.h.0.attn.c_attn.bias": (24,), "encoder.ln_f.weight": (8,), "embed_ln.weight": (8,),
              "embed_timestep.weight": (20, 8), "predict_action.0.weight": (2, 8), "norm.layernorm.weight": (8, 8),
              "x.layer_norm.scale": (8, 8), "x.bias": (2, 2), "x.scale": (3,), "kiln.weight": (2, 2)}
    named = [(n, Parameter(b.zeros(s, "float32"))) for n, s in shapes.items()]
    decay, no_decay = param_groups_no_decay(named, 0.1)
    ids = {id(p): n for n, p in named}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [ids[id(p)] for p in decay["params"]] == ["encoder.h.0.attn.c_attn.weight", "embed_timestep.weight",
                                                     "predict_action.0.weight", "kiln.weight"]
    assert len(no_decay["params"]) == len(named) - 4
    opt = AdamW([decay, no_decay], lr=1.0)  # the groups feed AdamW directly; the lr default fills in
    assert [g["lr"] for g in opt.param_groups] == [1.0, 1.0]


def test_linear_warmup_lrs():
    b = get_backend("numpy")
    opt = AdamW([{"params": [Parameter(b.zeros((1,), "float64"))], "lr": 1e-3},
                 {"params": [Parameter(b.zeros((1,), "float64"))], "lr": 3e-4}])
    sched = LinearWarmup(opt, 4)
    lrs = [sched.get_last_lr()]
    for _ in range(5):
        sched.step()
        lrs.append(sched.get_last_lr())
    expected = [[1e-3 * f, 3e-4 * f] for f in (0.25, 0.5, 0.75, 1, 1, 1)]
    assert all(math.isclose(a, e, rel_tol=1e-15) for row, erow in zip(lrs, expected) for a, e in zip(row, erow))
    assert LinearWarmup(AdamW([Parameter(b.zeros((1,), "float64"))], lr=0.1), 1).get_last_lr() == [0.1]
    with pytest.raises(ValueError, match="warmup_steps >= 1"):
        LinearWarmup(opt, 0)


def test_adamw_rejects_bad_arguments():
    b = get_backend("numpy")
    p = Parameter(b.zeros((1,), "float64"))
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([])
    with pytest.raises(ValueError, match="more than one place"):
        AdamW([p, p])
    with pytest.raises(ValueError, match="betas"):
        AdamW([p], betas=(0.9, 1.0))
