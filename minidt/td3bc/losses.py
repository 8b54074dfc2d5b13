"""TD3+BC's two losses, their values and their gradients, written out (Fujimoto & Gu 2021, eq. 3 and the authors'
TD3_BC.py). B is the batch size, A the action dimension.

The critic: clipped double Q-learning with target policy smoothing (TD3, Fujimoto et al. 2018).

    a'  = clip(pi'(s') + clip(eps, -c, c), low, high),   eps ~ N(0, sigma^2)     the target actor pi', smoothed
    y   = r + gamma * not_done * min(Q_1'(s', a'), Q_2'(s', a'))                  a constant: no gradient flows
    L_Q = mean_i (Q_1(s_i, a_i) - y_i)^2 + mean_i (Q_2(s_i, a_i) - y_i)^2         (F.mse_loss, twice)

    dL_Q / dQ_k,i = 2 (Q_k,i - y_i) / B

The actor: deterministic policy gradient plus behaviour cloning, with Q rescaled so alpha means the same on any
reward scale.

    lambda = alpha / mean_i |Q_1(s_i, pi(s_i))|                                   a constant (detached), per batch
    L_pi   = -lambda mean_i Q_1(s_i, pi(s_i)) + mean_{i,j} (pi(s_i)_j - a_i,j)^2

    dL_pi / dQ_1,i  = -lambda / B                          (then through the critic to its action input: networks.py)
    dL_pi / dpi_i,j = 2 (pi_i,j - a_i,j) / (B A)           (the BC term's own gradient, added at the same place)

lambda is a constant in the gradient: the paper detaches it, so d lambda / d theta (which would add a term through
|Q|) is not there. With every Q exactly 0, lambda is inf, as in the paper's code; a critic trained on any reward
does not stay there.

Every function returns 0-d arrays and gradients on its inputs' device: nothing is read back to the host.
"""

from __future__ import annotations

from typing import Any

from ..backend import array_namespace


def td_target(reward: Any, not_done: Any, target_q1: Any, target_q2: Any, discount: float) -> Any:
    """y = r + gamma * not_done * min(Q_1', Q_2'), all (B, 1) -> (B, 1). The operations in the paper's order
    (`reward + not_done * self.discount * target_Q`), so float64 bits agree with it."""
    xp = array_namespace(reward, target_q1)
    return reward + not_done * discount * xp.minimum(target_q1, target_q2)


def critic_loss(q1: Any, q2: Any, target: Any) -> tuple[Any, tuple[Any, Any]]:
    """q1, q2, target (B, 1) -> (L_Q, (dL/dq1, dL/dq2)): the sum of the two critics' mean squared TD errors."""
    xp = array_namespace(q1, q2, target)
    n = q1.shape[0] * q1.shape[1]  # the entries F.mse_loss averages over
    d1, d2 = q1 - target, q2 - target  # B,1
    loss = xp.mean(d1 * d1) + xp.mean(d2 * d2)
    return loss, (d1 * (2.0 / n), d2 * (2.0 / n))


def actor_loss(q: Any, pi: Any, action: Any, alpha: float) -> tuple[Any, tuple[Any, Any], Any]:
    """q (B, 1) = Q_1(s, pi(s)); pi, action (B, A): the actor's and the dataset's actions ->
    (L_pi, (dL/dq, dL/dpi), lambda). dL/dpi here is the BC term's part only: the Q term's part reaches pi through
    the critic's backward from dL/dq, and the caller adds the two."""
    xp = array_namespace(q, pi, action)
    lmbda = alpha / xp.mean(xp.abs(q))  # 0-d; a constant for the gradient
    diff = pi - action  # B,A
    loss = -lmbda * xp.mean(q) + xp.mean(diff * diff)
    dq = xp.ones_like(q) * (-lmbda / q.shape[0])  # B,1  d(-lambda mean Q)/dQ_i
    dpi = diff * (2.0 / (pi.shape[0] * pi.shape[1]))  # B,A
    return loss, (dq, dpi), lmbda
