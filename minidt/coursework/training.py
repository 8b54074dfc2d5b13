"""Assignment 6: the loss, gradient clipping, AdamW, and one training step of a (tiny) Decision Transformer.

masked_mse, adamw_step and clip_grad_norm are minidt's own (minidt/losses.py, minidt/optim.py: the pure functions
under AdamW.step and clip_grad_norm_); train_step is written here. tests/test_coursework.py checks them against
torch.optim.AdamW and torch.nn.utils.clip_grad_norm_.
"""

from __future__ import annotations

from typing import Any

from ..backend import array_namespace, to_numpy
from ..losses import masked_mse
from ..optim import adamw_step, clip_grad_norm
from .spec import Assignment, Function
from .checks import Case, Draw, Question
from .training_checks import AdamWSteps, ClipGradNorm, MaskedMSE, TrainSteps

__all__ = ["masked_mse", "adamw_step", "clip_grad_norm", "train_step", "constant_gradient_moments", "ASSIGNMENT"]


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


def constant_gradient_moments(g: Any, beta1: float, beta2: float, t: int) -> tuple[Any, Any]:
    """AdamW's m and v after t steps of the same gradient g, from m = v = 0 (before the bias corrections)."""
    return (1 - beta1**t) * g, (1 - beta2**t) * (g * g)  # a geometric series: (1 - b) (1 + b + ... + b^(t-1))


INTRO = """
Training the Decision Transformer is supervised learning on actions: predict a_t from the tokens up to s_t, and
minimize the mean squared error over the real (unpadded) timesteps.

masked_mse: with n = (number of real timesteps) * d,
    loss = sum over real (b, k) and all d of (pred - target)^2 / n
and dpred = dloss / dpred is yours to derive (a sum of squares over n: what is each entry's derivative, and what
is it at a padded timestep?). Padded predictions are garbage, possibly NaN: select with xp.where, never multiply
by the mask (NaN * 0 = NaN).

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
        dpred (B, K, d): the derivative of loss with respect to each entry of pred. Padded pred may be NaN: use
        xp.where(real[..., None], pred - target, 0.0). Real timesteps: mask > 0.
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
    Function("constant_gradient_moments", """
        Question (graded: your answer as a function). g (...), beta1, beta2, t >= 1 -> (m, v), each g's shape.

        AdamW's exp_avg m and exp_avg_sq v start at 0. If every step's gradient is the same g, what are m and v
        after t steps (the update rules above, before any bias correction)? Compare them with g and g^2: what do
        the bias corrections 1 - beta^t undo, and why do they matter most in the first steps?
        """),
)


def _draw_moments(d: Draw) -> Case:
    shape = tuple(d.int(1, 4, f"dim {i}") for i in range(d.int(0, 2, "ndim")))
    hyper = {"beta1": d.choice((0.9, 0.5, 0.0), "beta1"), "beta2": d.choice((0.999, 0.9), "beta2"),
             "t": d.int(1, 50, "t")}
    return Case({"g": d.rng().standard_normal(shape)}, hyper)


UNITS = (MaskedMSE(), AdamWSteps(), ClipGradNorm(), TrainSteps(),
         Question("constant_gradient_moments", _draw_moments,
                  lambda a, c: (a["g"], c["beta1"], c["beta2"], c["t"]), "m and v"))

ASSIGNMENT = Assignment(name="training", number=6, title="AdamW and the training step", intro=INTRO,
                        preamble=PREAMBLE, functions=FUNCTIONS, module=__name__, units=UNITS)
