"""The classic mistakes, each planted in the reference solution: each must cost at least its stated share of the
points of the function(s) it is in (the inputs the grader draws must tell the mistake from the right answer), and
nothing of any other function (a backward is graded on the reference forward's cache, a caller with the
reference's helpers). Graded as a student's file is, with the default number of inputs, on NumPy (the mistakes
are in the math; test_coursework.py plants the backend ones)."""

from __future__ import annotations

import pytest

from minidt.coursework import get_assignment
from minidt.coursework.grader import DEFAULT_MAX_EXAMPLES, grade_file

ATTENTION_NO_SCALE = """
def attention_forward(q, k, v, attention_mask, scale):
    xp = array_namespace(q)
    T = q.shape[2]
    i = xp.reshape(xp.arange(T, device=device(q)), (T, 1))
    j = xp.reshape(xp.arange(T, device=device(q)), (1, T))
    bias = xp.where(j <= i, xp.zeros((T, T), dtype=q.dtype, device=device(q)), -math.inf)
    padded = xp.reshape(attention_mask == 0, (attention_mask.shape[0], 1, 1, T))
    bias = xp.where(padded, bias + float(xp.finfo(q.dtype).min), bias)
    probs = softmax_forward(q @ xp.matrix_transpose(k) + bias)  # planted: the scale forgotten
    return probs @ v, (q, k, v, probs, scale)


def attention_backward(dout, cache):
    xp = array_namespace(dout)
    q, k, v, probs, scale = cache
    dscores = softmax_backward(dout @ xp.matrix_transpose(v), probs)  # planted: and here
    return dscores @ k, xp.matrix_transpose(dscores) @ q, xp.matrix_transpose(probs) @ dout
"""
ATTENTION_SCALE_IN_FORWARD_ONLY = """
def attention_backward(dout, cache):
    xp = array_namespace(dout)
    q, k, v, probs, scale = cache
    dscores = softmax_backward(dout @ xp.matrix_transpose(v), probs)  # planted: the forward's scale forgotten
    return dscores @ k, xp.matrix_transpose(dscores) @ q, xp.matrix_transpose(probs) @ dout
"""
ATTENTION_MASK_AFTER_SOFTMAX = """
def attention_forward(q, k, v, attention_mask, scale):
    xp = array_namespace(q)
    T = q.shape[2]
    i = xp.reshape(xp.arange(T, device=device(q)), (T, 1))
    j = xp.reshape(xp.arange(T, device=device(q)), (1, T))
    real = xp.reshape(attention_mask != 0, (attention_mask.shape[0], 1, 1, T))
    keep = xp.astype((j <= i) & real, q.dtype)  # B,1,T,T
    probs = softmax_forward(q @ xp.matrix_transpose(k) * scale) * keep  # planted: masked after the softmax
    return probs @ v, (q, k, v, probs, scale)
"""
ATTENTION_INF_FOR_PADDING = """
def attention_forward(q, k, v, attention_mask, scale):
    xp = array_namespace(q)
    T = q.shape[2]
    i = xp.reshape(xp.arange(T, device=device(q)), (T, 1))
    j = xp.reshape(xp.arange(T, device=device(q)), (1, T))
    bias = xp.where(j <= i, xp.zeros((T, T), dtype=q.dtype, device=device(q)), -math.inf)
    padded = xp.reshape(attention_mask == 0, (attention_mask.shape[0], 1, 1, T))
    bias = xp.where(padded, -math.inf, bias)  # planted: -inf for a padded key too
    probs = softmax_forward(q @ xp.matrix_transpose(k) * scale + bias)
    return probs @ v, (q, k, v, probs, scale)
"""
SOFTMAX_WITHOUT_MAX = """
def softmax_forward(x):
    xp = array_namespace(x)
    e = xp.exp(x)  # planted: no row maximum subtracted
    return e / xp.sum(e, axis=-1, keepdims=True)
"""
LAYERNORM_BACKWARD = """
def layernorm_backward(dout, cache):
    xp = array_namespace(dout)
    x, weight, mean, rstd = cache
    C = x.shape[-1]
    xhat = (x - mean) * rstd
    g = dout * weight
    dx = DX
    return dx, xp.sum(xp.reshape(dout * xhat, (-1, C)), axis=0), xp.sum(xp.reshape(dout, (-1, C)), axis=0)
"""
LAYERNORM_UNBIASED = """
def layernorm_forward(x, weight, bias, eps):
    xp = array_namespace(x)
    C = x.shape[-1]
    mean = xp.mean(x, axis=-1, keepdims=True)
    var = xp.sum((x - mean) ** 2, axis=-1, keepdims=True) / (C - 1)  # planted: unbiased, as np.var(ddof=1)
    rstd = 1.0 / xp.sqrt(var + eps)
    return (x - mean) * rstd * weight + bias, (x, weight, mean, rstd)
"""
GELU_TANH = """
def gelu_forward(x):
    xp = array_namespace(x)
    return 0.5 * x * (1.0 + xp.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))), x  # planted: gelu_new's form


def gelu_backward(dout, x):
    xp = array_namespace(x)
    t = xp.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x))
"""
DROPOUT_UNSCALED = """
def dropout_forward(x, p, u):
    xp = array_namespace(x)
    mask = xp.astype(u >= p, x.dtype)  # planted: the survivors are not scaled by 1/(1 - p)
    return x * mask, mask
"""
EMBEDDING_PLUS_EQUALS = """
def embedding_backward(dout, cache):
    xp = array_namespace(dout)
    flat, (V, C) = cache
    dweight = xp.zeros((V, C), dtype=dout.dtype, device=device(dout))
    dweight[flat] += xp.reshape(dout, (-1, C))  # planted: a repeated id adds once (fancy-index +=)
    return dweight
"""
ADAMW_NO_BIAS_CORRECTION = """
def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    xp = array_namespace(param)
    m = beta1 * exp_avg + (1 - beta1) * grad
    v = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    param = param * (1 - lr * weight_decay) - lr * m / (xp.sqrt(v) + eps)  # planted: no 1 - beta^t
    return param, m, v
"""
CLIP_EACH = """
def clip_grad_norm(grads, max_norm, eps=1e-6):
    xp = None
    out, norms = [], []
    for g in grads:
        if g is None:
            out.append(None)
            continue
        xp = array_namespace(g)
        norm = xp.linalg.vector_norm(g)
        norms.append(norm)
        out.append(g * xp.minimum(max_norm / (norm + eps), 1.0))  # planted: each by its own norm
    if xp is None:
        return out, 0.0
    return out, xp.linalg.vector_norm(xp.stack(norms))
"""
MSE_UNMASKED = """
def masked_mse(pred, target, mask):
    xp = array_namespace(pred)
    diff = pred - target  # planted: padding not masked
    n = diff.shape[0] * diff.shape[1] * diff.shape[2]
    return xp.sum(diff * diff) / n, diff * (2.0 / n)
"""
CROSS_ENTROPY_NO_MAX = """
def cross_entropy_forward(logits, target, mask):
    xp = array_namespace(logits)
    real = (mask > 0)[..., None]
    z = xp.where(real, logits, 0.0)
    logp = z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))  # planted: no row maximum subtracted
    y = xp.where(real, target, 0.0)
    n = xp.sum(xp.astype(real, logits.dtype))
    return -xp.sum(y * logp) / n, (logp, y, real, n)
"""
CROSS_ENTROPY_UNMASKED_MEAN = """
def cross_entropy_forward(logits, target, mask):
    xp = array_namespace(logits)
    z = logits - xp.max(logits, axis=-1, keepdims=True)
    logp = z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))
    real = (mask > 0)[..., None]
    n = xp.sum(xp.astype(real, logits.dtype))
    return -xp.mean(xp.sum(target * logp, axis=-1)), (logp, target, real, n)  # planted: every step, padding too
"""
CROSS_ENTROPY_MEAN_OVER_ALL_SLOTS = """
def cross_entropy_forward(logits, target, mask):
    xp = array_namespace(logits)
    real = (mask > 0)[..., None]
    z = xp.where(real, logits, 0.0)
    z = z - xp.max(z, axis=-1, keepdims=True)
    logp = z - xp.log(xp.sum(xp.exp(z), axis=-1, keepdims=True))
    y = xp.where(real, target, 0.0)
    n = xp.sum(xp.astype(real, logits.dtype))
    return -xp.sum(y * logp) / (mask.shape[0] * mask.shape[1]), (logp, y, real, n)  # planted: / (B K), not / N
"""
CROSS_ENTROPY_WITHOUT_1_OVER_N = """
def cross_entropy_backward(cache):
    xp = array_namespace(cache[0])
    logp, y, real, n = cache
    return xp.where(real, xp.exp(logp) - y, 0.0)  # planted: the mean's 1/N forgotten
"""

# name -> (assignment, source appended to the solution (a later def wins), the functions it is in, the share of
# their points it must cost at least). A share below 1 where the mistake leaves checks right: the backward that
# forgets the forward's scale still gets dv right (4 of its 6 checks lost), the LayerNorm backward without a term
# still gets dweight and dbias (2 of 6), -inf for padding breaks the output and not the causality probe (1 of 2),
# the scale forgotten in both passes costs 5 of their 8; a cross-entropy that sets padding aside but divides by
# B K is invariant to what padding holds (1 of 2); an unmasked MSE is consistent with its own loss, whose
# central differences it then passes where no NaN is in the padding. Elsewhere below 1: the inputs where the
# mistake makes no difference (p = 0 for dropout, a joint norm below max_norm for clipping, no overflow for the
# softmax and the cross-entropy (3 of the 10 drawn inputs have no row moved by 800), inputs near 0 where gelu's
# two forms agree to 1e-6 for the backward's finite differences).
MISTAKES = {
    "attention without the scale": ("attention", ATTENTION_NO_SCALE, ("attention_forward", "attention_backward"),
                                    5 / 8),
    "attention's scale in the forward only": ("attention", ATTENTION_SCALE_IN_FORWARD_ONLY, ("attention_backward",),
                                              4 / 6),
    "the mask applied after the softmax": ("attention", ATTENTION_MASK_AFTER_SOFTMAX, ("attention_forward",), 0.9),
    "-inf for padded keys": ("attention", ATTENTION_INF_FOR_PADDING, ("attention_forward",), 1 / 2),
    "softmax without the row maximum": ("attention", SOFTMAX_WITHOUT_MAX, ("softmax_forward",), 0.6),
    "LayerNorm backward without the mean(g) term": (
        "layernorm", LAYERNORM_BACKWARD.replace("DX", "(g - xhat * xp.mean(g * xhat, axis=-1, keepdims=True)) * rstd"),
        ("layernorm_backward",), 2 / 6),
    "LayerNorm backward without the variance term": (
        "layernorm", LAYERNORM_BACKWARD.replace("DX", "(g - xp.mean(g, axis=-1, keepdims=True)) * rstd"),
        ("layernorm_backward",), 2 / 6),
    "LayerNorm with the unbiased variance": ("layernorm", LAYERNORM_UNBIASED, ("layernorm_forward",), 0.9),
    "GELU in the tanh form where erf is asked": ("linear_activations", GELU_TANH, ("gelu_forward", "gelu_backward"),
                                                 0.8),
    "dropout without 1/(1-p)": ("linear_activations", DROPOUT_UNSCALED, ("dropout_forward",), 0.5),
    "embedding backward dW[ids] += dout with repeated ids": ("dt_embedding", EMBEDDING_PLUS_EQUALS,
                                                             ("embedding_backward",), 0.9),
    "AdamW without bias correction": ("training", ADAMW_NO_BIAS_CORRECTION, ("adamw_step",), 0.9),
    "clipping each gradient by its own norm": ("training", CLIP_EACH, ("clip_grad_norm",), 0.6),
    "MSE not masked at padding": ("training", MSE_UNMASKED, ("masked_mse",), 0.7),
    "cross-entropy without the row maximum": ("cross_entropy", CROSS_ENTROPY_NO_MAX, ("cross_entropy_forward",),
                                              0.6),
    "cross-entropy as a mean over every step, padding too": ("cross_entropy", CROSS_ENTROPY_UNMASKED_MEAN,
                                                             ("cross_entropy_forward",), 1.0),
    "cross-entropy padding set aside, but divided by B K": ("cross_entropy", CROSS_ENTROPY_MEAN_OVER_ALL_SLOTS,
                                                            ("cross_entropy_forward",), 1 / 2),
    "cross-entropy gradient without 1/N": ("cross_entropy", CROSS_ENTROPY_WITHOUT_1_OVER_N,
                                           ("cross_entropy_backward",), 1.0),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_classic_mistake_costs_its_share_and_nothing_else(tmp_path, mistake):
    name, source, functions, share = MISTAKES[mistake]
    a = get_assignment(name)
    path = tmp_path / f"{name}.py"
    path.write_text(a.source(solution=True) + source)
    report = grade_file(path, a, DEFAULT_MAX_EXAMPLES, backends={"numpy": 1})
    ours = [r for r in report.results if r.name.split(":")[0] in functions]
    others = [r.name for r in report.results if r not in ours and r.score < r.max_score]
    lost = sum(r.max_score - r.score for r in ours) / sum(r.max_score for r in ours)
    print(f"{mistake}: lost {lost:.3f} of {'+'.join(functions)}")
    assert lost >= share - 1e-9, (mistake, lost, {r.name: r.output for r in ours})
    assert others == [], others
