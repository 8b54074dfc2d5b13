"""Assignment 7: the cross-entropy of discrete actions, forward and the gradient derived by hand.

The reference solution is minidt's own pair (minidt/losses.py), the loss a discrete-action Decision Transformer
trains with; weighted_target_gradient, the written part, is written here. The checks are in
cross_entropy_checks.py.
"""

from __future__ import annotations

from typing import Any

from ..backend import array_namespace
from ..losses import cross_entropy_backward, cross_entropy_forward
from .checks import Case, Draw, Question
from .cross_entropy_checks import CrossEntropy
from .spec import Assignment, Function

__all__ = ["cross_entropy_forward", "cross_entropy_backward", "weighted_target_gradient", "ASSIGNMENT"]


def weighted_target_gradient(z: Any, y: Any) -> Any:
    """z (..., A) logits, y (..., A) nonnegative weights -> d/dz of -sum_a y_a log softmax(z)_a, (..., A)."""
    xp = array_namespace(z)
    e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    p = e / xp.sum(e, axis=-1, keepdims=True)
    return p * xp.sum(y, axis=-1, keepdims=True) - y  # the weights' sum: 1 for a one-hot, not in general


INTRO = """
A Decision Transformer with discrete actions (CartPole, Atari, Key-to-Door) outputs logits z, one score per
action, at each state token. The probabilities are their softmax and the loss is the cross-entropy with the action
taken (a one-hot row y), averaged over the real (unpadded) steps, as torch.nn.functional.cross_entropy takes it
over the rows it is given:

    p_j = exp(z_j) / sum_k exp(z_k)       log p_j = z_j - log sum_k exp(z_k)
    loss = -(1/N) sum over real (b, t) of sum_j y_j log p_j,   N = the number of real steps

Computed as written, exp(z) overflows to inf for z > 709.8 (float64; 88.7 in float32), and a row of very negative
logits gives a sum of 0 and log 0 = -inf. Subtract each row's maximum first: log sum_k exp(z_k) = m + log sum_k
exp(z_k - m), m = max_k z_k, so that every exp is at most 1 and one of them is exactly 1. Padded rows are garbage
(possibly NaN): set them aside with xp.where before anything is computed from them.

The backward pass is yours to derive (tutorials/12_discrete_actions_and_credit_assignment.py does it). Some
prompts:
- d/dz_c of log sum_k exp(z_k): what familiar function of z is it?
- Then d log p_j / dz_c, with a Kronecker delta; then d/dz_c of -sum_j y_j log p_j. What does sum_j y_j equal
  for a one-hot row, and what is left?
- The mean over N real steps: which factor does each real row's gradient get, and what is the gradient of a padded
  row?
- The backward takes only the cache: the loss is the end of the graph (d loss / d loss = 1), and the softmax is
  the exponential of the cached log-softmax. Does subtracting the row maximum change the gradient?
"""

PREAMBLE = """
from typing import Any

from minidt.backend import array_namespace
"""

FUNCTIONS = (
    Function("cross_entropy_forward", """
        logits (B, K, A), target (B, K, A) one-hot rows (the actions taken), mask (B, K) nonzero at real steps
        -> (loss, cache).

        loss (0-d array) = -(1/N) sum over real (b, k) of sum_a target[b, k, a] log softmax(logits[b, k])_a, N the
        number of real steps (mask > 0). Padded rows of logits and target may hold anything, NaN included.
        real = (mask > 0)[..., None] (B, K, 1); z = xp.where(real, logits, 0.0); z = z - its row maximum
        (xp.max(z, axis=-1, keepdims=True)); logp = z - log(sum(exp(z))) over the last axis (keepdims=True);
        y = xp.where(real, target, 0.0).
        cache = (logp (B, K, A), y (B, K, A), real (B, K, 1) bool, n (0-d array of logits' dtype: N)).
        """),
    Function("cross_entropy_backward", """
        cache from cross_entropy_forward -> dlogits (B, K, A).

        dlogits = d loss / d logits, entry by entry: derive it (the module docstring's prompts). No dout: the
        loss is the end of the graph. It is exactly 0 at the padded steps (xp.where(real, ..., 0.0)).
        """),
    Function("weighted_target_gradient", """
        Question (graded: your answer as a function). z (..., A) logits, y (..., A) nonnegative weights -> (..., A).

        A target row that need not sum to 1 (a one-hot times an importance weight, say): the loss of one row is
        l(z) = -sum_a y_a log softmax(z)_a. Entry c of the answer: d l / d z_c. Redo the derivation without
        using sum_a y_a = 1: which term does a one-hot target hide?
        """),
)


def _draw_weights(d: Draw) -> Case:
    lead = tuple(d.int(1, 3, f"leading dim {i}") for i in range(d.int(0, 2, "number of leading dims")))
    A = d.int(2, 6, "A")
    total = d.choice((0.5, 2.0, 3.0), "sum of each row of y")  # never 1: a one-hot's answer is wrong here
    rng = d.rng()
    w = rng.uniform(0.1, 1.0, (*lead, A))
    return Case({"z": 2.0 * rng.standard_normal((*lead, A)), "y": total * w / w.sum(axis=-1, keepdims=True)})


UNITS = (CrossEntropy(), Question("weighted_target_gradient", _draw_weights, lambda a, c: (a["z"], a["y"]),
                                  "d loss / d z"))

ASSIGNMENT = Assignment(name="cross_entropy", number=7, title="Cross-entropy for discrete actions", intro=INTRO,
                        preamble=PREAMBLE, functions=FUNCTIONS, module=__name__, units=UNITS)
