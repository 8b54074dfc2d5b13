"""Assignment 6: the loss, gradient clipping, AdamW, and one training step of a (tiny) Decision Transformer.

masked_mse, adamw_step and clip_grad_norm are minidt's own (minidt/losses.py, minidt/optim.py: the pure functions
under AdamW.step and clip_grad_norm_); train_step is written here. tests/test_coursework.py checks them against
torch.optim.AdamW and torch.nn.utils.clip_grad_norm_.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Backend, array_namespace, to_numpy
from ..losses import masked_mse
from ..optim import adamw_step, clip_grad_norm
from .checks import FORWARD_TOL, GRAD_TOL, Case, Custom, Draw, compare, host, on_backend
from .spec import Assignment, Function

__all__ = ["masked_mse", "adamw_step", "clip_grad_norm", "train_step", "ASSIGNMENT"]


def train_step(model: Any, batch: dict[str, Any], opt_state: dict[str, Any], lr: float, weight_decay: float,
               max_norm: float) -> float:
    """One training step of a DecisionTransformerModel on a batch; returns the loss."""
    out = model(states=batch["states"], actions=batch["actions"], rewards=None,
                returns_to_go=batch["returns_to_go"], timesteps=batch["timesteps"],
                attention_mask=batch["attention_mask"])
    loss, daction = masked_mse(out.action_preds, batch["actions"], batch["attention_mask"])
    model.zero_grad()  # gradients accumulate into .grad: clear the previous step's first
    model.backward(action_preds=daction)
    named = [(name, p) for name, p in model.named_parameters() if p.grad is not None]
    grads, _ = clip_grad_norm([p.grad for _, p in named], max_norm)
    for (name, p), g in zip(named, grads):
        xp = array_namespace(p.data)
        if name not in opt_state:
            opt_state[name] = {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
        s = opt_state[name]
        s["step"] += 1
        p.data, s["exp_avg"], s["exp_avg_sq"] = adamw_step(p.data, g, s["exp_avg"], s["exp_avg_sq"], s["step"], lr,
                                                           0.9, 0.999, 1e-8, weight_decay)
    return float(to_numpy(loss))


INTRO = """
Training the Decision Transformer is supervised learning on actions: predict a_t from the tokens up to s_t, and
minimize the mean squared error over the real (unpadded) timesteps.

masked_mse: with n = (number of real timesteps) * d,
    loss = sum over real (b, k) and all d of (pred - target)^2 / n          dpred = 2 (pred - target) / n, 0 at padding
Padded predictions are garbage, possibly NaN: select with xp.where, never multiply by the mask (NaN * 0 = NaN).

clip_grad_norm: total = || (||g_1||, ||g_2||, ...) ||_2 over the gradients that are not None; scale every one by
min(1, max_norm / (total + eps)). Return the scaled list (None stays None) and total, as a 0-d array.

AdamW (torch.optim.AdamW), for one parameter p with gradient g at step t = 1, 2, ...:
    m <- beta1 m + (1 - beta1) g            v <- beta2 v + (1 - beta2) g^2
    p <- p (1 - lr weight_decay) - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
The bias corrections 1 - beta^t undo the zero start of m and v; the decay is decoupled (it shrinks p directly
and never enters m or v).

train_step puts them together on a minidt.DecisionTransformerModel: forward, loss on action_preds, zero the
gradients, model.backward(action_preds=dloss), clip, and one AdamW step for every parameter that has a
gradient (betas 0.9, 0.999, eps 1e-8).
"""

PREAMBLE = """
from typing import Any

from minidt.backend import array_namespace, to_numpy
"""

FUNCTIONS = (
    Function("masked_mse", """
        pred, target (B, K, d), mask (B, K) nonzero at real timesteps -> (loss, dpred).

        loss (0-d array) = sum over real (b, k) and all d of (pred - target)^2 / (number of real (b, k) * d);
        dpred (B, K, d) = 2 (pred - target) / that number at real timesteps, 0 at padding. Padded pred may be
        NaN: use xp.where(real[..., None], pred - target, 0.0). Real timesteps: mask > 0.
        """),
    Function("adamw_step", """
        param, grad, exp_avg, exp_avg_sq (same shape), step t >= 1 (int), lr, beta1, beta2, eps, weight_decay
        -> (param, exp_avg, exp_avg_sq), new arrays (do not write into the inputs).

        m = beta1 exp_avg + (1 - beta1) grad;  v = beta2 exp_avg_sq + (1 - beta2) grad^2;
        param = param (1 - lr weight_decay) - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
        """),
    Function("clip_grad_norm", """
        grads: list of arrays (entries may be None), max_norm, eps -> (clipped list, total_norm).

        total_norm = sqrt(sum over the arrays of sum(g^2)) (a 0-d array; 0.0 when every entry is None);
        every g is multiplied by min(1, max_norm / (total_norm + eps)) (xp.minimum(..., 1.0)).
        """),
    Function("train_step", """
        model: a minidt.DecisionTransformerModel; batch: {"states" (B, K, S), "actions" (B, K, A),
        "returns_to_go" (B, K, 1), "timesteps" (B, K), "attention_mask" (B, K)} arrays of the model's backend;
        opt_state: a dict you own (empty at the first step: keep each parameter's step, exp_avg, exp_avg_sq in
        it, by name); lr, weight_decay, max_norm -> the loss, a Python float.

        out = model(states=..., actions=..., rewards=None, returns_to_go=..., timesteps=..., attention_mask=...)
        loss, dpred = masked_mse(out.action_preds, batch["actions"], batch["attention_mask"])
        model.zero_grad(); model.backward(action_preds=dpred)   # gradients land in p.grad
        clip the gradients of the parameters that have one (p.grad is not None; model.named_parameters()),
        then p.data = the AdamW update (betas 0.9, 0.999, eps 1e-8). float(to_numpy(loss)) is the return value.
        """),
)


# --- the checks ------------------------------------------------------------------------------------------------


def _draw_mse(d: Draw) -> Case:
    B, K, n = d.int(1, 3, "B"), d.int(1, 4, "K"), d.int(1, 3, "d")
    pads = [d.int(0, K - 1, f"left padding of row {b}") for b in range(B)]
    nan_padding = d.bool("NaN predictions at padding")
    rng = d.rng()
    mask = np.ones((B, K))
    for b, p in enumerate(pads):
        mask[b, :p] = 0.0
    pred = rng.standard_normal((B, K, n))
    if nan_padding:
        pred = np.where(mask[..., None] > 0, pred, np.nan)
    return Case({"pred": pred, "target": rng.standard_normal((B, K, n))}, {"mask": mask},
                seed=int(rng.integers(2**31)))


def _mse(f: Any, b: Backend, case: Case, pred: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
    arrays, consts = on_backend(case, b)
    if pred is not None:
        arrays["pred"] = b.asarray(pred, "float64")
    loss, dpred = f(arrays["pred"], arrays["target"], consts["mask"])
    return host(loss, b, "masked_mse loss"), dpred


def _mse_loss(s: Any, r: Any, b: Backend, case: Case) -> None:
    compare("masked_mse loss", _mse(s.masked_mse, b, case)[0], to_numpy(_mse(r.masked_mse, b, case)[0]), FORWARD_TOL)


def _mse_fd(s: Any, r: Any, b: Backend, case: Case) -> None:
    dpred = host(_mse(s.masked_mse, b, case)[1], b, "masked_mse dpred")
    x0 = case.arrays["pred"]
    if dpred.shape != x0.shape:
        raise AssertionError(f"masked_mse: dpred has shape {dpred.shape}, expected {x0.shape} (the shape of pred)")
    rng = np.random.default_rng(case.seed)
    for _ in range(2):
        u = rng.standard_normal(x0.shape)
        h = 1e-6
        fd = (float(_mse(s.masked_mse, b, case, x0 + h * u)[0])
              - float(_mse(s.masked_mse, b, case, x0 - h * u)[0])) / (2 * h)
        an = float(np.sum(dpred * u))
        if not abs(fd - an) <= 1e-6 * (float(np.linalg.norm(dpred) * np.linalg.norm(u)) + abs(fd)) + 1e-12:
            raise AssertionError(f"masked_mse: dpred disagrees with central finite differences of the loss: along a "
                                 f"random direction u, <dpred, u> = {an:.8g}, (loss(pred + h u) - loss(pred - h u)) "
                                 f"/ 2h = {fd:.8g} (h = {h:g})")


def _mse_ref(s: Any, r: Any, b: Backend, case: Case) -> None:
    got = host(_mse(s.masked_mse, b, case)[1], b, "masked_mse dpred")
    compare("masked_mse dpred", got, to_numpy(_mse(r.masked_mse, b, case)[1]), GRAD_TOL)


def _draw_adamw(d: Draw) -> Case:
    shape = tuple(d.int(1, 4, f"dim {i}") for i in range(d.int(0, 2, "ndim")))
    lr = d.choice((1e-3, 0.1, 0.5), "lr")
    beta1, beta2 = d.choice((0.9, 0.5, 0.0), "beta1"), d.choice((0.999, 0.9), "beta2")
    eps, weight_decay = d.choice((1e-8, 1e-3), "eps"), d.choice((0.0, 0.01, 0.3), "weight_decay")
    rng = d.rng()
    arrays = {"param": rng.standard_normal(shape)}
    arrays.update({f"grad{t}": rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 1) for t in range(5)})
    return Case(arrays, {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay})


def _adamw_run(f: Any, b: Backend, case: Case, check: bool) -> list[tuple[np.ndarray, ...]]:
    arrays, c = on_backend(case, b)
    p = arrays["param"]
    zeros = np.zeros(case.arrays["param"].shape)
    m, v = b.asarray(zeros, "float64"), b.asarray(zeros, "float64")
    states = []
    for t in range(1, 6):
        p, m, v = f(p, arrays[f"grad{t - 1}"], m, v, t, c["lr"], c["beta1"], c["beta2"], c["eps"], c["weight_decay"])
        states.append(tuple(host(x, b, f"adamw_step {what} (step {t})") if check else to_numpy(x)
                            for x, what in ((p, "param"), (m, "exp_avg"), (v, "exp_avg_sq"))))
    return states


def _adamw_ref(s: Any, r: Any, b: Backend, case: Case) -> None:
    got, want = _adamw_run(s.adamw_step, b, case, True), _adamw_run(r.adamw_step, b, case, False)
    for t, (g, w) in enumerate(zip(got, want), start=1):
        for what, x, y in zip(("param", "exp_avg", "exp_avg_sq"), g, w):
            compare(f"adamw_step {what} after step {t}", x, y, FORWARD_TOL)


def _draw_clip(d: Draw) -> Case:
    n = d.int(1, 3, "number of gradients")
    shapes = [tuple(d.int(1, 4, f"grad {i} dim {j}") for j in range(d.int(0, 2, f"grad {i} ndim"))) for i in range(n)]
    none_at = d.choice((None,) + tuple(range(n + 1)), "None inserted at")
    ratio = d.choice((0.1, 0.5, 0.99, 2.0), "max_norm / norm")
    rng = d.rng()
    arrays = {f"g{i}": rng.standard_normal(s) for i, s in enumerate(shapes)}
    norm = float(np.sqrt(sum(np.sum(g * g) for g in arrays.values())))
    return Case(arrays, {"max_norm": ratio * norm, "none_at": none_at, "n": n})


def _clip(f: Any, b: Backend, case: Case) -> tuple[list, Any]:
    arrays, c = on_backend(case, b)
    grads = [arrays[f"g{i}"] for i in range(c["n"])]
    if c["none_at"] is not None:
        grads.insert(c["none_at"], None)
    return f(grads, c["max_norm"])


def _clip_ref(s: Any, r: Any, b: Backend, case: Case) -> None:
    (got, got_norm), (want, want_norm) = _clip(s.clip_grad_norm, b, case), _clip(r.clip_grad_norm, b, case)
    compare("clip_grad_norm total_norm", host(got_norm, b, "clip_grad_norm total_norm"), to_numpy(want_norm),
            FORWARD_TOL)
    got = list(got)
    if len(got) != len(want):
        raise AssertionError(f"clip_grad_norm: returned {len(got)} gradients for {len(want)} given")
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None or g is None:
            if g is not w:
                raise AssertionError(f"clip_grad_norm: entry {i} should be {'None' if w is None else 'an array'}, "
                                     f"got {'None' if g is None else 'an array'}")
            continue
        compare(f"clip_grad_norm gradient {i}", host(g, b, f"clip_grad_norm gradient {i}"), to_numpy(w), FORWARD_TOL)


def _draw_train(d: Draw) -> Case:
    n_head = d.int(1, 2, "n_head")
    fields = dict(state_dim=d.int(1, 3, "state_dim"), act_dim=d.int(1, 2, "act_dim"), hidden_size=4 * n_head,
                  n_head=n_head, n_layer=d.int(1, 2, "n_layer"), max_ep_len=8, n_positions=8,
                  activation_function=d.choice(("relu", "gelu_new", "tanh"), "activation"),
                  action_tanh=d.bool("action_tanh"), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                  initializer_range=0.2)
    B, K = d.int(1, 2, "B"), d.int(1, 4, "K")
    pads = [d.int(0, K - 1, f"left padding of row {b}") for b in range(B)]
    hyper = {"lr": d.choice((1e-3, 1e-2), "lr"), "weight_decay": d.choice((0.0, 0.1), "weight_decay"),
             "max_norm": d.choice((0.05, 1.0, 100.0), "max_norm")}
    rng = d.rng()
    mask = np.ones((B, K))
    for b, p in enumerate(pads):
        mask[b, :p] = 0.0
    S, A = fields["state_dim"], fields["act_dim"]
    batch = {"states": rng.standard_normal((B, K, S)), "actions": np.tanh(rng.standard_normal((B, K, A))),
             "returns_to_go": rng.standard_normal((B, K, 1)), "attention_mask": mask}
    consts = {"timesteps": rng.integers(0, 8, size=(B, K)), "fields": fields, "model_seed": int(rng.integers(2**31)),
              **hyper}
    return Case(batch, consts)


def _train(f: Any, b: Backend, case: Case, check: bool) -> tuple[list[float], dict[str, np.ndarray]]:
    from ..config import DecisionTransformerConfig
    from ..model import DecisionTransformerModel

    arrays, c = on_backend(case, b)
    batch = {**arrays, "timesteps": c["timesteps"]}
    model = DecisionTransformerModel(DecisionTransformerConfig(**c["fields"]), dtype="float64", backend=b,
                                     seed=c["model_seed"])
    opt_state: dict[str, Any] = {}
    losses = []
    for step in range(3):
        loss = f(model, batch, opt_state, c["lr"], c["weight_decay"], c["max_norm"])
        if check and not isinstance(loss, (float, int)):
            raise AssertionError(f"train_step: expected the loss as a Python float, got {type(loss).__name__}")
        losses.append(float(loss))
    params = {name: (host(p.data, b, f"parameter {name}") if check else to_numpy(p.data))
              for name, p in model.named_parameters()}
    return losses, params


def _train_ref(s: Any, r: Any, b: Backend, case: Case) -> None:
    (got_losses, got), (want_losses, want) = _train(s.train_step, b, case, True), _train(r.train_step, b, case, False)
    compare("train_step losses of steps 1, 2, 3", np.array(got_losses), np.array(want_losses), FORWARD_TOL)
    for name, w in want.items():
        compare(f"train_step: parameter {name} after 3 steps", got[name], w, GRAD_TOL)


UNITS = (
    Custom("masked_mse", _draw_mse, (("loss vs reference", 1, _mse_loss),
                                     ("dpred vs finite differences", 1, _mse_fd),
                                     ("dpred vs reference", 1, _mse_ref))),
    Custom("adamw_step", _draw_adamw, (("5 steps vs reference", 2, _adamw_ref),)),
    Custom("clip_grad_norm", _draw_clip, (("vs reference", 1, _clip_ref),)),
    Custom("train_step", _draw_train, (("3 steps on a tiny model vs reference", 2, _train_ref),)),
)

ASSIGNMENT = Assignment(name="training", number=6, title="AdamW and the training step", intro=INTRO,
                        preamble=PREAMBLE, functions=FUNCTIONS, module=__name__, units=UNITS)
