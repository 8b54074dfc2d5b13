"""AdamW, gradient clipping and the linear learning-rate warm-up: PyTorch's semantics, written out.

Each matches its PyTorch counterpart to the last bits in float64 (tests/test_optim.py runs them step for step):

    AdamW            torch.optim.AdamW (amsgrad=False, maximize=False), the single-tensor CPU path
    clip_grad_norm_  torch.nn.utils.clip_grad_norm_
    LinearWarmup     torch.optim.lr_scheduler.LambdaLR(opt, lambda steps: min((steps + 1) / warmup_steps, 1)),
                     as the original Decision Transformer trainer builds it

The update for one parameter p with gradient g, at step t = 1, 2, ...:

    p <- p * (1 - lr * weight_decay)                  decoupled decay: shrinks p, never enters the moments
    m <- m + (1 - beta1) (g - m)                      = beta1 m + (1 - beta1) g, written as torch's lerp_
    v <- beta2 v + (1 - beta2) g^2
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Arrays stay on their device (no host sync); every array operation goes through the parameter's Array API
namespace. state_dict() moves the moments to NumPy, load_state_dict() moves them back.

On a device, one buffer, as llm.c keeps its parameters: `AdamW.step` concatenates the gradients into one flat
array and runs `adamw_step` once on the flat parameters, gradients and moments (per parameter group, and per step
count when some parameter started late), then hands each parameter and moment back as a view of its slice; the
next step finds those views in place and concatenates nothing but the gradients. 15 array operations per group
instead of 14 per tensor (for the paper config 30 instead of 756, each a kernel launch on a GPU), and the same bits
as one update per tensor: every element goes through the same operations in the same order. `clip_grad_norm_`
likewise clips the concatenated gradients as one. On NumPy both go tensor by tensor, which is faster there: a
tensor's temporaries stay in the CPU's cache.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from .backend import array_namespace, backend_of, to_numpy
from .kernels.switch import kernel_path
from .layers.module import Parameter


def adamw_step(param: Any, grad: Any, exp_avg: Any, exp_avg_sq: Any, step: int, lr: float, beta1: float,
               beta2: float, eps: float, weight_decay: float) -> tuple[Any, Any, Any]:
    """One AdamW update of one parameter at step t = `step` (1, 2, ...) -> (param, exp_avg, exp_avg_sq), all new
    arrays of param's shape: the inputs are never written to (param may alias arrays the caller still holds: a
    loaded state dict, a torch tensor's memory). torch's operations in torch's order, so float64 bits agree."""
    xp = array_namespace(param)
    # Each result is a new array updated in place: one new array per line, not one per operator.
    m = grad - exp_avg
    m *= 1 - beta1
    m += exp_avg  # exp_avg + (1 - beta1) (grad - exp_avg) = beta1 m + (1 - beta1) g, as torch's lerp_
    v = (1 - beta2) * grad
    v *= grad
    v += beta2 * exp_avg_sq  # beta2 v + (1 - beta2) g^2
    step_size = lr / (1 - beta1**step)  # bias corrections: m and v start at 0, so early averages are too small
    denom = xp.sqrt(v)
    denom /= (1 - beta2**step) ** 0.5
    denom += eps
    update = step_size * m
    update /= denom
    param = param * (1 - lr * weight_decay)  # decoupled decay first, then the Adam step, in torch's order
    param -= update
    return param, m, v


class AdamW:
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2).

    params: a list of Parameters, or of param-group dicts {"params": [...], "lr": ..., "weight_decay": ...} whose
    missing keys take the defaults given here. Parameters whose grad is None are skipped by `step` (their step
    count does not advance). `param_groups` is a list of dicts, as in PyTorch: a scheduler writes group["lr"]."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"AdamW: expected lr, eps, weight_decay >= 0 and betas in [0, 1), got lr={lr}, "
                             f"betas={betas}, eps={eps}, weight_decay={weight_decay}")
        self.defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        groups = list(params)
        if not groups:
            raise ValueError("AdamW: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict[str, Any]] = []
        for g in groups:
            group = {**self.defaults, **g, "params": list(g["params"])}
            group["betas"] = tuple(group["betas"])
            self.param_groups.append(group)
        all_params = self._params()
        if len({id(p) for p in all_params}) != len(all_params):
            raise ValueError("AdamW: some parameter appears in more than one place in params")
        if not all(isinstance(p, Parameter) for p in all_params):
            raise TypeError("AdamW: expected Parameters (model.parameters()), got "
                            f"{sorted({type(p).__name__ for p in all_params} - {'Parameter'})}")
        self.state: dict[Parameter, dict[str, Any]] = {}  # p -> {"step": int, "exp_avg": m, "exp_avg_sq": v}
        self._flat: dict[tuple, tuple] = {}  # the last step's flat buffers, by group and parameters (see _update)

    def _params(self) -> list[Parameter]:
        """Every parameter, group by group: the order that numbers them in state_dict()."""
        return [p for group in self.param_groups for p in group["params"]]

    def step(self) -> None:
        """One update of every parameter that has a gradient: on a device, one adamw_step per group over one
        flat buffer; on NumPy, one per tensor."""
        flat = {}
        for gi, group in enumerate(self.param_groups):
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            buffers: dict[tuple, list[Parameter]] = {}  # device arrays: one flat buffer per step count and dtype
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.get(p)
                if state is None:
                    xp = array_namespace(p.data)
                    state = self.state[p] = {"step": 0, "exp_avg": xp.zeros_like(p.data),
                                             "exp_avg_sq": xp.zeros_like(p.data)}
                state["step"] += 1
                if isinstance(p.data, np.ndarray):
                    # NumPy: one tensor at a time. A tensor's update and its temporaries stay in the CPU's cache;
                    # over one flat buffer they do not: the paper config's AdamW step took 7.3 ms instead of 5.6
                    # (one thread, median of 9 rounds; benchmarks/README.md). A GPU pays a launch per operation.
                    p.data, state["exp_avg"], state["exp_avg_sq"] = adamw_step(
                        p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], lr, beta1, beta2,
                        eps, wd)
                else:
                    buffers.setdefault((state["step"], p.data.dtype), []).append(p)
            for (step, _), params in buffers.items():
                key = (gi, *map(id, params))
                flat[key] = self._update(params, self._flat.get(key), step, lr, beta1, beta2, eps, wd)
        self._flat = flat  # only what this step used: a buffer of parameters that no longer step is let go

    def _update(self, params: list[Parameter], last: "tuple | None", step: int, lr: float, beta1: float,
                beta2: float, eps: float, weight_decay: float) -> tuple:
        """adamw_step on the concatenation of `params` (and of their gradients and moments); then every parameter
        and moment is a view of its slice of the results. `last` is what the previous call returned for the same
        parameters: (flat param, m, v, their views); reused when every view is still in place (nothing replaced
        p.data or the moments since), else the flat buffers are concatenated afresh."""
        xp = array_namespace(params[0].data)
        states = [self.state[p] for p in params]
        if last is not None and all(p.data is a and s["exp_avg"] is b and s["exp_avg_sq"] is c
                                    for p, s, a, b, c in zip(params, states, *last[3])):
            param, exp_avg, exp_avg_sq = last[:3]
        else:
            param, exp_avg, exp_avg_sq = (_concat(xp, arrays) for arrays in (
                [p.data for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]))
        if kernel_path(param):  # one launch (kernels/adamw.cu), reading clip_grad_norm_'s flat buffer in place
            from .kernels import adamw

            grads = [p.grad for p in params]
            grad = adamw.tiled_base(grads)
            grad = _concat(xp, grads) if grad is None else grad
            param, exp_avg, exp_avg_sq = adamw.adamw(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                                                     weight_decay)
        else:
            grad = _concat(xp, [p.grad for p in params])
            param, exp_avg, exp_avg_sq = adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                                                    weight_decay)
        shapes = [p.data.shape for p in params]
        views = tuple(_split(xp, flat, shapes) for flat in (param, exp_avg, exp_avg_sq))
        for p, s, a, b, c in zip(params, states, *views):
            p.data, s["exp_avg"], s["exp_avg_sq"] = a, b, c
        return param, exp_avg, exp_avg_sq, views

    def zero_grad(self) -> None:
        """Set every gradient to None (PyTorch's default set_to_none=True)."""
        for p in self._params():
            p.grad = None

    def state_dict(self) -> dict[str, Any]:
        """{"state": {i: {"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [{..., "params": [i, ...]}]}, PyTorch's
        layout: parameters numbered 0, 1, ... across the groups in order, moments as NumPy copies on the host."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {index[id(p)]: {"step": s["step"], "exp_avg": np.array(to_numpy(s["exp_avg"])),
                                "exp_avg_sq": np.array(to_numpy(s["exp_avg_sq"]))} for p, s in self.state.items()}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [index[id(p)] for p in g["params"]]}
                  for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore moments, step counts and group settings (lr, betas, ...) saved by state_dict(), into an
        optimizer built over the same parameters in the same groups. Moments move to each parameter's backend and
        dtype. Keys of "state" may be ints or strings (after a JSON round trip)."""
        saved = state_dict["param_groups"]
        if [len(g["params"]) for g in saved] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("AdamW.load_state_dict: parameter groups do not match: saved sizes "
                             f"{[len(g['params']) for g in saved]}, this optimizer's "
                             f"{[len(g['params']) for g in self.param_groups]}")
        for group, g in zip(self.param_groups, saved):
            group.update({k: v for k, v in g.items() if k != "params"})
            group["betas"] = tuple(group["betas"])
        params = self._params()
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            b = backend_of(p.data)
            # a copy: step() updates moments in place, and must not write into the caller's arrays
            self.state[p] = {"step": int(s["step"]),
                             "exp_avg": b.asarray(np.array(to_numpy(s["exp_avg"])), dtype=p.data.dtype),
                             "exp_avg_sq": b.asarray(np.array(to_numpy(s["exp_avg_sq"])), dtype=p.data.dtype)}


def param_groups_no_decay(named_parameters: Iterable[tuple[str, Parameter]],
                          weight_decay: float) -> list[dict[str, Any]]:
    """Two groups for AdamW: matrices (linear and embedding weights) with `weight_decay`, and biases, LayerNorm
    weights and any other 1-D parameter with none, as nanoGPT does: decaying a LayerNorm gain towards 0 or a bias
    towards 0 is not a regularizer anyone wants. (The original DT trainer decays everything:
    `AdamW(model.parameters(), ...)`.) Returns [{"params": decay, "weight_decay": weight_decay},
    {"params": no_decay, "weight_decay": 0.0}]; either list may be empty."""
    decay, no_decay = [], []
    for name, p in named_parameters:
        parts = name.lower().split(".")
        # the DT / GPT-2 LayerNorms are embed_ln, ln_1, ln_2, ln_f; other models say layernorm or layer_norm
        is_layernorm = any(part in ("ln", "embed_ln") or part.startswith("ln_") or "layernorm" in part.replace("_", "")
                           for part in parts[:-1])
        if len(p.shape) < 2 or name.endswith(".bias") or is_layernorm:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def clip_grad_norm(grads: list[Any], max_norm: float, eps: float = 1e-6) -> tuple[list[Any], Any]:
    """grads (a list of arrays, None allowed) -> (the grads scaled so that their joint norm is at most max_norm,
    the norm before). New arrays: the inputs are not written to.

    total_norm = ||(||g_1||, ||g_2||, ...)||_2 over the grads that are not None; each is multiplied by
    min(1, max_norm / (total_norm + eps)). total_norm is a 0-d array on the grads' device (0.0 when every entry
    is None). A NaN or inf norm is returned as it is and the grads scaled by it, as torch does with
    error_if_nonfinite=False: the training loop's loss check is what stops a diverged run."""
    present = [g for g in grads if g is not None]
    if not present:
        return list(grads), 0.0
    xp = array_namespace(*present)
    total_norm = xp.linalg.vector_norm(xp.stack([xp.linalg.vector_norm(g) for g in present]))  # 0-d
    clip_coef = xp.minimum(max_norm / (total_norm + eps), 1.0)  # 0-d, on the device: no host sync
    return [None if g is None else g * clip_coef for g in grads], total_norm


def _concat(xp: Any, arrays: list[Any]) -> Any:
    """The arrays flattened and concatenated, (sum of sizes,); for one array, a flat view of it."""
    flat = [xp.reshape(a, (-1,)) for a in arrays]
    return xp.concat(flat) if len(flat) > 1 else flat[0]


def _split(xp: Any, flat: Any, shapes: list[tuple[int, ...]]) -> list[Any]:
    """Views of consecutive slices of flat, one per shape (no copies)."""
    views, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        views.append(xp.reshape(flat[start:start + n], shape))
        start += n
    return views


def clip_grad_norm_(params: "Parameter | Iterable[Parameter]", max_norm: float, eps: float = 1e-6) -> Any:
    """torch.nn.utils.clip_grad_norm_: clip_grad_norm on the parameters' .grad, which are replaced (not scaled in
    place: Parameter.accumulate may have stored an array someone else holds). Returns the norm before.

    On a device the gradients are clipped as one flat buffer (the norm of the concatenation is the same number:
    a handful of kernel launches instead of two per gradient), and each .grad becomes a view of its slice. NumPy
    goes gradient by gradient, in the CPU's cache: the concatenation's extra passes over memory made a hidden-512
    model's clip 3 times slower there (benchmarks/README.md)."""
    params = [params] if isinstance(params, Parameter) else list(params)
    with_grad = [p for p in params if p.grad is not None]
    if with_grad and not isinstance(with_grad[0].grad, np.ndarray):
        xp = array_namespace(*(p.grad for p in with_grad))
        flat = _concat(xp, [p.grad for p in with_grad])
        if kernel_path(flat):  # the norm and the clip coefficient in one launch (kernels/adamw.cu)
            from .kernels import adamw

            norm_coef = adamw.grad_norm(flat, max_norm, eps)
            flat, total_norm = flat * norm_coef[1], norm_coef[0]
        else:
            (flat,), total_norm = clip_grad_norm([flat], max_norm, eps)
        for p, g in zip(with_grad, _split(xp, flat, [p.grad.shape for p in with_grad])):
            p.grad = g
        return total_norm
    clipped, total_norm = clip_grad_norm([p.grad for p in params], max_norm, eps)
    for p, g in zip(params, clipped):
        p.grad = g
    return total_norm


class LinearWarmup:
    """lr = base_lr * min(1, (step + 1) / warmup_steps): LambdaLR with the original DT trainer's lambda.

    As LambdaLR, construction is the first step (step 0: lr = base_lr / warmup_steps); call `step()` after each
    optimizer step. base_lr is each group's "initial_lr" (set here from its "lr" if absent). warmup_steps=1 means
    no warm-up."""

    def __init__(self, optimizer: AdamW, warmup_steps: int):
        if warmup_steps < 1:
            raise ValueError(f"LinearWarmup: expected warmup_steps >= 1 (1 means no warm-up), got {warmup_steps}")
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1  # LambdaLR's name for the number of steps taken
        self.step()

    def factor(self, step: int) -> float:
        return min((step + 1) / self.warmup_steps, 1)

    def step(self) -> None:
        self.last_epoch += 1
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * self.factor(self.last_epoch)

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step count and base lrs, and set the groups' lr to match (so the order of loading the
        optimizer and the scheduler does not matter)."""
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = int(state_dict["last_epoch"])
        self.warmup_steps = int(state_dict["warmup_steps"])
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base_lr * self.factor(self.last_epoch)
