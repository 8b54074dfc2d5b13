"""The checks of assignment 6 (training.py): masked_mse's value and gradient, five AdamW steps, clipping, and
train_step compared step by step with the reference on a tiny model, naming the usual cause of a wrong update."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..optim import adamw_step, clip_grad_norm
from .checks import (FD_STEP, FD_TOL, FORWARD_TOL, GRAD_TOL, Call, Case, Draw, Failure, Kind, Step, Train, compare,
                     describe, host, left_padding_mask, returned)
from .sandbox import Arr, Ref


def _draw_mse(d: Draw) -> Case:
    B, K, n = d.int(1, 3, "B"), d.int(2, 4, "K"), d.int(1, 3, "d")
    mask = left_padding_mask(d, B, K)  # row 0 padded
    nan_padding = d.bool("NaN predictions at padding")
    rng = d.rng()
    pred = rng.standard_normal((B, K, n))
    if nan_padding:
        pred = np.where(mask[..., None] > 0, pred, np.nan)
    return Case({"pred": pred, "target": rng.standard_normal((B, K, n))}, {"mask": mask, "nan_padding": nan_padding},
                seed=int(rng.integers(2**31)))


@dataclass
class MaskedMSE:
    """masked_mse returns a value and its gradient: the value against the reference, the gradient against central
    differences of the student's own value and against the reference."""

    functions = ("masked_mse",)
    draw = staticmethod(_draw_mse)

    def kinds(self) -> list[Kind]:
        return [Kind("loss", "masked_mse: loss vs reference", 1, "masked_mse"),
                Kind("fd", "masked_mse: dpred vs finite differences", 1, "masked_mse"),
                Kind("ref", "masked_mse: dpred vs reference", 1, "masked_mse")]

    def plan(self, case: Case, ref: Any) -> tuple[list, tuple]:
        pred, target, mask = case.arrays["pred"], case.arrays["target"], case.consts["mask"]
        loss, dpred = ref.masked_mse(pred, target, mask)
        u = np.random.default_rng(case.seed).standard_normal(pred.shape)
        calls = [Call("masked_mse", (pred, target, mask))] + [
            Call("masked_mse", (pred + sign * FD_STEP * u, target, mask), take=0) for sign in (1.0, -1.0)]
        return calls, (np.asarray(loss), np.asarray(dpred), u)

    def judge(self, key: str, case: Case, plan: tuple, steps: list[Step], backend: str) -> None:
        ref_loss, ref_dpred, u = plan
        value = returned(steps[0], "masked_mse")
        if not isinstance(value, tuple) or len(value) != 2:
            raise Failure(f"masked_mse returned {describe(value)}, expected (loss, dpred)")
        if key == "loss":
            loss = host(value[0], backend, "masked_mse loss")
            self._nan_at_padding(case, loss, "loss")
            compare("masked_mse loss", loss, ref_loss, FORWARD_TOL)
            return
        dpred = host(value[1], backend, "masked_mse dpred")
        self._nan_at_padding(case, dpred, "dpred")
        if key == "ref":
            compare("masked_mse dpred", dpred, ref_dpred, GRAD_TOL)
            return
        if dpred.shape != u.shape:
            raise Failure(f"masked_mse: dpred has shape {dpred.shape}, expected {u.shape} (the shape of pred)")
        plus, minus = (float(host(returned(s, "masked_mse", inplace=False), backend, "masked_mse loss"))
                       for s in steps[1:3])
        fd, an = (plus - minus) / (2 * FD_STEP), float(np.sum(dpred * u))
        if not abs(fd - an) <= FD_TOL * (float(np.linalg.norm(dpred) * np.linalg.norm(u)) + abs(fd)) + 1e-12:
            raise Failure(f"masked_mse: dpred disagrees with central finite differences of the loss: along a random "
                          f"direction u, <dpred, u> = {an:.8g}, (loss(pred + h u) - loss(pred - h u)) / 2h = {fd:.8g} "
                          f"(h = {FD_STEP:g})")

    @staticmethod
    def _nan_at_padding(case: Case, got: np.ndarray, what: str) -> None:
        """The padding message, only where padding is the cause: pred held NaN there and the result is not finite."""
        if case.consts["nan_padding"] and not np.all(np.isfinite(got)):
            raise Failure(f"masked_mse {what} is not finite: this input's pred is NaN at its padded timesteps (a "
                          "model's padded outputs are garbage, possibly NaN): select the real ones with xp.where; "
                          "multiplying by the mask keeps the NaN (NaN * 0 = NaN)")


def _draw_adamw(d: Draw) -> Case:
    shape = tuple(d.int(1, 4, f"dim {i}") for i in range(d.int(0, 2, "ndim")))
    lr = d.choice((1e-3, 0.1, 0.5), "lr")
    beta1, beta2 = d.choice((0.9, 0.5, 0.0), "beta1"), d.choice((0.999, 0.9), "beta2")
    eps, weight_decay = d.choice((1e-8, 1e-3), "eps"), d.choice((0.0, 0.01, 0.3), "weight_decay")
    rng = d.rng()
    arrays = {"param": rng.standard_normal(shape)}
    arrays.update({f"grad{t}": rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 1) for t in range(5)})
    return Case(arrays, {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay})


@dataclass
class AdamWSteps:
    """Five adamw_step calls, each on the previous one's results (fresh moments at the start, as separate arrays
    on every backend); each step's param, exp_avg and exp_avg_sq against the reference's, and no argument written
    into."""

    steps: int = 5
    functions = ("adamw_step",)
    draw = staticmethod(_draw_adamw)

    def kinds(self) -> list[Kind]:
        return [Kind("steps", f"adamw_step: {self.steps} steps vs reference", 2, "adamw_step")]

    def plan(self, case: Case, ref: Any) -> tuple[list, list]:
        c = case.consts
        hyper = (c["lr"], c["beta1"], c["beta2"], c["eps"], c["weight_decay"])
        p, zeros = case.arrays["param"], np.zeros(case.arrays["param"].shape)
        m, v = zeros, zeros.copy()
        want, calls = [], []
        for t in range(1, self.steps + 1):
            g = case.arrays[f"grad{t - 1}"]
            args = (p, g, m, v) if t == 1 else (Ref(t - 2, 0), g, Ref(t - 2, 1), Ref(t - 2, 2))
            calls.append(Call("adamw_step", (*args, t, *hyper), keep=True))
            p, m, v = (np.asarray(x) for x in ref.adamw_step(p, g, m, v, t, *hyper))
            want.append((p, m, v))
        return calls, want

    def judge(self, key: str, case: Case, want: list, steps: list[Step], backend: str) -> None:
        for t, (step, expected) in enumerate(zip(steps, want), start=1):
            try:
                value = returned(step, "adamw_step")
            except Failure as f:
                raise Failure(f"at step {t}: {f}" if t > 1 or step.ok else str(f), f.general, f.exception) from None
            if not isinstance(value, tuple) or len(value) != 3:
                raise Failure(f"adamw_step returned {describe(value)}, expected (param, exp_avg, exp_avg_sq)")
            for what, got, w in zip(("param", "exp_avg", "exp_avg_sq"), value, expected):
                compare(f"adamw_step {what} after step {t}", host(got, backend, f"adamw_step {what} (step {t})"), w,
                        FORWARD_TOL)


def _draw_clip(d: Draw) -> Case:
    n = d.int(2, 3, "number of gradients")  # two at least: clipping by their joint norm, not each its own
    shapes = [tuple(d.int(1, 4, f"grad {i} dim {j}") for j in range(d.int(0, 2, f"grad {i} ndim"))) for i in range(n)]
    none_at = d.choice((None,) + tuple(range(n + 1)), "None inserted at")
    ratio = d.choice((0.1, 0.5, 0.99, 2.0), "max_norm / norm")
    rng = d.rng()
    arrays = {f"g{i}": rng.standard_normal(s) for i, s in enumerate(shapes)}
    norm = float(np.sqrt(sum(np.sum(g * g) for g in arrays.values())))
    return Case(arrays, {"max_norm": ratio * norm, "none_at": none_at, "n": n})


@dataclass
class ClipGradNorm:
    functions = ("clip_grad_norm",)
    draw = staticmethod(_draw_clip)

    def kinds(self) -> list[Kind]:
        return [Kind("clip", "clip_grad_norm: vs reference", 1, "clip_grad_norm")]

    def plan(self, case: Case, ref: Any) -> tuple[list, tuple]:
        c = case.consts
        grads: list = [case.arrays[f"g{i}"] for i in range(c["n"])]
        if c["none_at"] is not None:
            grads.insert(c["none_at"], None)
        clipped, norm = ref.clip_grad_norm(list(grads), c["max_norm"])
        return [Call("clip_grad_norm", (grads, c["max_norm"]))], (clipped, np.asarray(norm))

    def judge(self, key: str, case: Case, plan: tuple, steps: list[Step], backend: str) -> None:
        want, want_norm = plan
        value = returned(steps[0], "clip_grad_norm")
        if not isinstance(value, tuple) or len(value) != 2 or not isinstance(value[0], (list, tuple)):
            raise Failure(f"clip_grad_norm returned {describe(value)}, expected (a list of gradients, total_norm)")
        got, got_norm = value
        compare("clip_grad_norm total_norm", host(got_norm, backend, "clip_grad_norm total_norm"), want_norm,
                FORWARD_TOL)
        if len(got) != len(want):
            raise Failure(f"clip_grad_norm: returned {len(got)} gradients for {len(want)} given")
        for i, (g, w) in enumerate(zip(got, want)):
            if w is None or g is None:
                if (g is None) != (w is None):
                    raise Failure(f"clip_grad_norm: entry {i} should be {'None' if w is None else 'an array'}, "
                                  f"got {describe(g)}")
                continue
            compare(f"clip_grad_norm gradient {i}", host(g, backend, f"clip_grad_norm gradient {i}"), np.asarray(w),
                    FORWARD_TOL)


def _draw_train(d: Draw) -> Case:
    n_head = d.int(1, 2, "n_head")
    fields = dict(state_dim=d.int(1, 3, "state_dim"), act_dim=d.int(1, 2, "act_dim"), hidden_size=4 * n_head,
                  n_head=n_head, n_layer=d.int(1, 2, "n_layer"), max_ep_len=8, n_positions=8,
                  activation_function=d.choice(("relu", "gelu_new", "tanh"), "activation"),
                  action_tanh=d.bool("action_tanh"), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                  initializer_range=0.2)
    B, K = d.int(1, 2, "B"), d.int(1, 4, "K")
    mask = left_padding_mask(d, B, K)
    hyper = {"lr": d.choice((1e-3, 1e-2), "lr"), "weight_decay": d.choice((0.0, 0.1), "weight_decay"),
             "max_norm": d.choice((0.05, 1.0, 100.0), "max_norm")}
    rng = d.rng()
    S, A = fields["state_dim"], fields["act_dim"]
    batch = {"states": rng.standard_normal((B, K, S)), "actions": np.tanh(rng.standard_normal((B, K, A))),
             "returns_to_go": rng.standard_normal((B, K, 1)), "attention_mask": mask}
    consts = {"timesteps": rng.integers(0, 8, size=(B, K)), "fields": fields, "model_seed": int(rng.integers(2**31)),
              **hyper}
    return Case(batch, consts)


@dataclass
class _Reference:
    """The reference's step t: the state it started from, and what it produced."""

    params_before: dict
    state_before: dict
    loss: float
    grads: dict
    params: dict


def _update(params: dict, grads: dict, state: dict, lr: float, weight_decay: float, max_norm: float,
            clip: str = "total", fresh_step: bool = False, fresh_moments: bool = False) -> dict:
    """One AdamW update from a reference state, the right way (clip="total") or one of the usual wrong ways."""
    names = [n for n in params if grads[n] is not None]
    gs = [grads[n] for n in names]
    if clip == "total":
        gs = clip_grad_norm(gs, max_norm)[0]
    elif clip == "each":
        gs = [clip_grad_norm([g], max_norm)[0][0] for g in gs]
    out = dict(params)
    for n, g in zip(names, gs):
        s = state.get(n)
        step = 1 if s is None or fresh_step else s["step"] + 1
        m, v = ((np.zeros_like(g), np.zeros_like(g)) if s is None or fresh_moments
                else (s["exp_avg"], s["exp_avg_sq"]))
        out[n] = adamw_step(params[n], g, m, v, step, lr, 0.9, 0.999, 1e-8, weight_decay)[0]
    return out


MISTAKES = (  # (how the update went wrong, the _update options that reproduce it)
    ("each gradient was clipped by its own norm: clip_grad_norm clips all of them together, by their total norm",
     {"clip": "each"}),
    ("the gradients were not clipped", {"clip": "none"}),
    ("AdamW's step count started again at 1: keep each parameter's step in opt_state", {"fresh_step": True}),
    ("exp_avg and exp_avg_sq started again from zero: keep them in opt_state", {"fresh_moments": True}),
)


@dataclass
class TrainSteps:
    """train_step three times on a fresh tiny model, compared step by step: the loss it returns, the gradients
    right after model.backward, the parameters after the update; the first difference is named (quantity, step),
    with the usual cause when one explains it."""

    steps: int = 3
    functions = ("train_step",)
    draw = staticmethod(_draw_train)
    needs_model = True

    def kinds(self) -> list[Kind]:
        return [Kind("train", f"train_step: {self.steps} steps on a tiny model vs reference", 2, "train_step")]

    def plan(self, case: Case, ref: Any) -> tuple[list, list[_Reference]]:
        from ..config import DecisionTransformerConfig
        from ..model import DecisionTransformerModel

        c = case.consts
        hyper = (c["lr"], c["weight_decay"], c["max_norm"])
        batch = {**case.arrays, "timesteps": c["timesteps"]}
        model = DecisionTransformerModel(DecisionTransformerConfig(**c["fields"]), dtype="float64", backend="numpy",
                                         seed=c["model_seed"])
        after_backward: list[dict] = []
        backward = model.backward

        def recording_backward(*args: Any, **kwargs: Any) -> Any:
            result = backward(*args, **kwargs)
            after_backward.append({n: None if p.grad is None else np.array(p.grad) for n, p in
                                   model.named_parameters()})
            return result

        model.backward = recording_backward
        opt_state: dict = {}
        want = []
        for _ in range(self.steps):
            params_before = {n: np.array(p.data) for n, p in model.named_parameters()}
            state_before = {n: {k: np.array(v) if isinstance(v, np.ndarray) else v for k, v in s.items()}
                            for n, s in opt_state.items()}
            loss = ref.train_step(model, {k: np.array(v) for k, v in batch.items()}, opt_state, *hyper)
            want.append(_Reference(params_before, state_before, loss, after_backward[-1],
                                   {n: np.array(p.data) for n, p in model.named_parameters()}))
        return [Train("train_step", c["fields"], c["model_seed"], batch, hyper, self.steps)], want

    def judge(self, key: str, case: Case, want: list[_Reference], steps: list[Step], backend: str) -> None:
        got_steps = returned(steps[0], "train_step")
        c = case.consts
        for t, (got, w) in enumerate(zip(got_steps, want), start=1):
            loss = got["loss"]
            if isinstance(loss, Arr) and loss.scalar and loss.backend == "numpy":  # a NumPy scalar is a float
                loss = float(loss.array)
            if isinstance(loss, bool) or not isinstance(loss, (float, int)):
                raise Failure(f"train_step: expected the loss as a Python float (float(to_numpy(loss))), got "
                              f"{describe(loss)}")
            if got["changed"]:
                raise Failure(f"train_step changed {', '.join(got['changed'])} in place (at step {t}): the batch is "
                              "the caller's")
            compare(f"train_step: the loss returned at step {t}", np.array(float(loss)), np.array(w.loss),
                    FORWARD_TOL)
            if got["backward_calls"] == 0:
                raise Failure(f"train_step: model.backward was not called at step {t}")
            self._grads(t, got, w, want[t - 2] if t > 1 else None, backend)
            params = {n: host(a, backend, f"train_step: parameter {n} after step {t}")
                      for n, a in got["params"].items()}
            wrong = [n for n, p in w.params.items() if not _close(params.get(n), p)]
            if wrong:
                explained = next((f": {why}" for why, options in MISTAKES if all(
                    _close(params.get(n), p) for n, p in _update(w.params_before, w.grads, w.state_before, c["lr"],
                                                                 c["weight_decay"], c["max_norm"],
                                                                 **options).items())), "")
                try:
                    compare(f"train_step: parameter {wrong[0]} after step {t}", params[wrong[0]], w.params[wrong[0]],
                            GRAD_TOL)
                except Failure as f:
                    raise Failure(f"{f}; the loss and the gradients of step {t} were right, the update was not"
                                  f"{explained}") from None
                raise Failure(f"train_step: parameter {wrong[0]} is missing after step {t}")

    @staticmethod
    def _grads(t: int, got: dict, w: _Reference, previous: "_Reference | None", backend: str) -> None:
        grads = got["grads"] if isinstance(got["grads"], dict) else {}
        for n, want_g in w.grads.items():
            g = grads.get(n)
            if (g is None) != (want_g is None):
                raise Failure(f"train_step: after model.backward at step {t}, the gradient of {n} is "
                              f"{describe(g)}, expected {describe(want_g)}")
            if want_g is None:
                continue
            g = host(g, backend, f"train_step: the gradient of {n} at step {t}")
            if _close(g, want_g):
                continue
            if previous is not None and _close(g, want_g + previous.grads[n]):
                raise Failure(f"train_step: the gradients at step {t} include step {t - 1}'s: zero_grad missing? "
                              "(model.backward adds into p.grad: clear them before it)")
            twice = f" (model.backward was called {got['backward_calls']} times)" if got["backward_calls"] > 1 else ""
            compare(f"train_step: the gradient of {n} after model.backward at step {t}{twice}", g, want_g, GRAD_TOL)


def _close(got: "np.ndarray | None", want: np.ndarray) -> bool:
    if got is None or got.shape != want.shape or not np.all(np.isfinite(got)):
        return False
    return float(np.max(np.abs(got - want), initial=0.0)) <= GRAD_TOL * max(float(np.max(np.abs(want), initial=0.0)),
                                                                           1e-300)


