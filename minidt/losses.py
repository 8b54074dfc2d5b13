"""The training losses: mean squared error (continuous actions) and cross-entropy (discrete actions) over the real
(unpadded) timesteps, their values and their gradients.

The original Decision Transformer trainer keeps the unmasked rows and averages over them:

    a_hat = action_preds.reshape(-1, act_dim)[attention_mask.reshape(-1) > 0]
    a     = action_target.reshape(-1, act_dim)[attention_mask.reshape(-1) > 0]
    loss  = torch.mean((a_hat - a) ** 2)

Boolean indexing gives data-dependent shapes (awkward on a GPU and outside the Array API), so we keep every row,
zero the padded ones, and divide by the number of real entries instead: the same number, and the gradient comes out
the full (B, K, d) shape that `model.backward` expects, zero at padding. Cross-entropy is kept the same way.
"""

from __future__ import annotations

from typing import Any

from .backend import array_namespace, device
from .kernels.switch import kernel_path


def masked_mse(pred: Any, target: Any, mask: Any) -> tuple[Any, Any]:
    """loss = sum over real (b, k) and all d of (pred - target)^2 / (number of real (b, k) * d).

    pred, target (B, K, d); mask (B, K), nonzero (or True) at real timesteps. Returns (loss, dpred): loss a 0-d
    array, dpred (B, K, d), both of pred's dtype and device (no host sync). All-padding gives NaN, as torch.mean
    of an empty selection does."""
    if kernel_path(pred):  # the kernel path: two launches (minidt/kernels/mse.cu)
        from .kernels import mse

        return mse.masked_mse(pred, target, mask)
    xp = array_namespace(pred, target, mask)
    real = mask if mask.dtype == xp.bool else mask > 0  # B,K
    d = pred.shape[-1]
    # where, not multiply: padded predictions are garbage, and NaN * 0 would still be NaN
    diff = xp.where(real[..., None], pred - target, 0.0)  # B,K,d
    n = xp.sum(xp.astype(real, pred.dtype)) * d  # number of real entries; exact in float32 up to 2^24
    loss = xp.sum(diff * diff) / n
    dpred = diff * (2.0 / n)  # B,K,d
    return loss, dpred


def cross_entropy_forward(logits: Any, target: Any, mask: Any) -> tuple[Any, tuple]:
    """loss = - sum over real (b, k) of log softmax(logits[b, k]) . target[b, k] / (number of real (b, k)).

    logits (B, K, A); target (B, K, A) one-hot (the action taken; a probability vector works the same); mask
    (B, K), nonzero (or True) at real timesteps. Returns (loss, cache): loss a 0-d array of logits' dtype and
    device (no host sync). What padded rows of logits or target hold never matters, NaN included. This is
    torch.nn.functional.cross_entropy(logits[real], ids[real]), the mean over the real steps."""
    xp = array_namespace(logits, target, mask)
    real = (mask if mask.dtype == xp.bool else mask > 0)[..., None]  # B,K,1
    z = xp.where(real, logits, 0.0)  # B,K,A  padded rows are garbage: zeros there keep exp() finite
    z = z - xp.max(z, axis=-1, keepdims=True)  # the row max subtracted: every exp <= 1, no overflow
    logp = z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))  # B,K,A  log softmax; the sum is >= 1
    y = xp.where(real, target, 0.0)  # B,K,A
    n = xp.sum(xp.astype(real, logits.dtype))  # number of real steps
    loss = -xp.sum(y * logp) / n
    return loss, (logp, y, real, n)


def cross_entropy_backward(cache: tuple) -> Any:
    """d loss / d logits (B, K, A) = (softmax(logits) - target) / N at the real steps, 0 at padding.

    Why: loss_bk = -sum_a y_a (z_a - log sum_j exp z_j), so d loss_bk / d z_a = -y_a + softmax(z)_a sum_j y_j,
    and sum_j y_j = 1 for a one-hot target. Shifting z by the row max changes neither term."""
    xp = array_namespace(cache[0])
    logp, y, real, n = cache
    return xp.where(real, xp.exp(logp) - y, 0.0) / n  # B,K,A


def dt_loss(outputs: Any, states: Any, actions: Any, returns_to_go: Any, attention_mask: Any,
            state_weight: float = 0.0, return_weight: float = 0.0, discrete: bool = False
            ) -> tuple[Any, tuple[Any, Any, Any]]:
    """The Decision Transformer loss: action MSE (cross-entropy when `discrete`: action_preds are logits and
    actions one-hot), plus optional weighted next-state and next-return MSEs.

    outputs: the model's (state_preds, action_preds, return_preds) (a DecisionTransformerOutput or a tuple),
    shapes (B, K, state_dim), (B, K, act_dim), (B, K, 1). states, actions, returns_to_go: the model's inputs, the
    same shapes; attention_mask (B, K).

    action_preds[:, t] is read from the state token s_t and predicts a_t. state_preds and return_preds are read
    from the action token a_t and predict what comes *next* (s_{t+1}, R_{t+1}), so they are scored against the
    inputs shifted by one, over the pairs (t, t+1) where both are real. The paper trains on actions alone (both
    weights 0, the default).

    Returns (loss, (dstate_preds, daction_preds, dreturn_preds)): loss a 0-d array, each gradient the shape of its
    prediction, None for a term with weight 0, so that `model.backward(*grads)` runs only the heads that are used.
    """
    state_preds, action_preds, return_preds = outputs[0], outputs[1], outputs[2]
    if discrete:
        loss, cache = cross_entropy_forward(action_preds, actions, attention_mask)
        daction = cross_entropy_backward(cache)
    else:
        loss, daction = masked_mse(action_preds, actions, attention_mask)
    dstate = dreturn = None
    if state_weight:
        loss_s, dstate = _next_step_mse(state_preds, states, attention_mask, "state_weight")
        loss, dstate = loss + state_weight * loss_s, state_weight * dstate
    if return_weight:
        loss_r, dreturn = _next_step_mse(return_preds, returns_to_go, attention_mask, "return_weight")
        loss, dreturn = loss + return_weight * loss_r, return_weight * dreturn
    return loss, (dstate, daction, dreturn)


def _next_step_mse(pred: Any, inputs: Any, mask: Any, what: str) -> tuple[Any, Any]:
    """masked_mse of pred[:, t] against inputs[:, t+1] over real pairs; the gradient padded back to pred's shape
    (zero at the last timestep, which has no next one to predict)."""
    xp = array_namespace(pred, inputs, mask)
    B, K, d = pred.shape
    if K < 2:
        raise ValueError(f"dt_loss: {what} needs K >= 2 timesteps (a prediction and the step after it), got K={K}")
    real = mask if mask.dtype == xp.bool else mask > 0  # B,K
    pairs = xp.logical_and(real[:, :-1], real[:, 1:])  # B,K-1
    loss, d_head = masked_mse(pred[:, :-1, :], inputs[:, 1:, :], pairs)  # d_head B,K-1,d
    last = xp.zeros((B, 1, d), dtype=pred.dtype, device=device(pred))
    return loss, xp.concat((d_head, last), axis=1)  # B,K,d

